"""``lowp ptq``: post-training quantization of a task's FP32 model over a grid of options; the run is
``lowp.experiments.ptq.run_ptq`` (outputs: DIR/results.json, DIR/results.md, DIR/ptq.png)."""
from __future__ import annotations

import argparse

from ..experiments.ptq import METHODS, PTQSettings, run_ptq


def run(args) -> int:
    run_ptq(PTQSettings.from_mapping(args))
    return 0


def _pos_ints(s: str) -> int:
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {s!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {s}")
    return v


def _zero_one(s: str) -> bool:
    if s not in ("0", "1"):
        raise argparse.ArgumentTypeError(f"expected 0 (symmetric) or 1 (asymmetric), got {s!r}")
    return s == "1"


def register(sub) -> None:
    p = sub.add_parser("ptq", help="post-training quantization of a task's FP32 model",
                       description="Train (or load from --out) a task's FP32 model, quantize it post-training "
                                   "(INT8, FGQ ternary, cluster ternary/4-bit, ternary residual) over a grid of "
                                   "options, evaluate, and write results.json (metric as a fraction, as in "
                                   "lowp compare), results.md and ptq.png (percent).")
    p.add_argument("--task", default="digits-mlp", help="task name from lowp.experiments.tasks (default digits-mlp)")
    p.add_argument("--method", required=True, choices=METHODS)
    p.add_argument("--out", required=True, help="output directory (the FP32 model is cached there, keyed by task, "
                                                "seed, epochs, lr, batch size and lowp version)")
    p.add_argument("--epochs", type=_pos_ints, default=None, help="FP32 training epochs (default: the task's)")
    p.add_argument("--retrain", action="store_true", help="train even if DIR holds a model")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--calib-samples", type=int, default=512, help="calibration subset size (training data)")
    p.add_argument("--calibration", nargs="+", default=["minmax"], choices=["minmax", "percentile", "entropy"])
    p.add_argument("--act-bits", nargs="+", type=_pos_ints, default=[8])
    p.add_argument("--weight-bits", type=_pos_ints, default=8, help="int8 method: weight bits")
    p.add_argument("--granularity", nargs="+", default=["channel"], choices=["channel", "tensor"])
    p.add_argument("--asymmetric", nargs="+", type=_zero_one, default=[False],
                   metavar="{0,1}", help="int8: asymmetric grids (1) or symmetric (0); several allowed")
    p.add_argument("--skip-first", action="store_true", help="int8: keep the first layer FP32")
    p.add_argument("--skip-last", action="store_true", help="int8: keep the last layer FP32")
    p.add_argument("--group", nargs="+", type=_pos_ints, default=None,
                   help="FGQ / residual group size N (default 4 for fgq, 64 for ternary-residual)")
    p.add_argument("--ternary-method", default="optimal", choices=["optimal", "threshold"])
    p.add_argument("--edge-bits", type=int, default=8, help="first/last layer weight bits for ternary methods "
                                                             "(0: ternary too)")
    p.add_argument("--cluster", nargs="+", type=_pos_ints, default=[4], help="cluster: filters per scale")
    p.add_argument("--kind", nargs="+", default=["ternary"], choices=["ternary", "int4"])
    p.add_argument("--terms", nargs="+", type=_pos_ints, default=[1, 2, 3], help="residual terms (start count)")
    p.add_argument("--max-terms", type=_pos_ints, default=4)
    p.add_argument("--budget-bytes", type=_pos_ints, default=None, help="residual: greedy allocation budget")
    p.add_argument("--block", type=_pos_ints, default=None, help="residual: filters per sensitivity unit")
    p.add_argument("--exec", dest="execute", action="store_true",
                   help="also run the real execution paths (BF16 on oneDNN; INT8 on fbgemm / torch._int_mm, dynamic "
                        "and, for int8 configurations with 8-bit symmetric per-channel weights and activations, "
                        "static) and report their metric and measured speed against FP32")
    p.add_argument("--exec-repeats", type=_pos_ints, default=5, help="--exec: timed passes (median)")
    p.set_defaults(func=run)
