"""``lowp ptq``: train (or load) the FP32 model of a task, quantize it post-training with one method over a grid of
options, evaluate, and write DIR/results.json, DIR/results.md (table) and DIR/ptq.png (accuracy against weight bits
and against multiplications).

As in ``lowp compare``'s results.json, ``metric`` and ``fp32_metric`` are fractions in [0, 1] (correct / counted,
``metric_name`` from the task) and ``fp32_delta`` = metric − fp32_metric; the terminal table, results.md and the
plot show them in percent (Δ in percentage points). Each configuration also records how close its test outputs are
to the FP32 model's, independently of the labels (``fidelity``): ``fp32_agreement`` (fraction of test predictions
equal to FP32's) and ``output_rel_error`` (||out − out_fp32||² / ||out_fp32||²)."""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import io as _io
import itertools
import json
import math
import os
import sys
import tempfile
import time
import warnings
from typing import Any, Callable

import torch
from torch import nn

METHODS = ("int8", "fgq", "cluster", "ternary-residual")


# ----------------------------------------------------------------------------------------------------------------
# tasks: lowp.experiments.tasks when it provides the task, else small built-in ones

@dataclasses.dataclass
class PTQTask:
    """What ``lowp ptq`` needs of a task: a model factory, train/test tensors and SGD hyper-parameters."""

    name: str
    make_model: Callable[[], nn.Module]
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    epochs: int = 10
    lr: float = 0.05
    batch_size: int = 64
    momentum: float = 0.9
    weight_decay: float = 0.0
    metric_counts: Callable | None = None
    loss_fn: Callable | None = None
    metric_name: str = "accuracy"


def get_ptq_task(name: str) -> PTQTask:
    """A task of ``lowp.experiments.tasks`` (imported lazily: a higher layer), adapted for PTQ."""
    from ..experiments.tasks import TaskData, get_task
    t = get_task(name)
    d = t.load_data()
    if not isinstance(d, TaskData):
        raise ValueError(f"task {name!r} streams its data ({type(d).__name__}); lowp ptq needs a task with "
                         "in-memory tensors (TaskData)")
    return PTQTask(t.name, t.build_model, d.x_train, d.y_train, d.x_test, d.y_test, t.epochs, t.lr, t.batch_size,
                   t.momentum, t.weight_decay, t.metric_counts, t.loss_fn, t.metric_name)


def train_fp32(task: PTQTask, epochs: int | None = None, seed: int = 0) -> nn.Module:
    """Plain FP32 training with the task's hyper-parameters: SGD with momentum, cosine learning rate."""
    torch.manual_seed(seed)
    model = task.make_model()
    opt = torch.optim.SGD(model.parameters(), lr=task.lr, momentum=task.momentum, weight_decay=task.weight_decay)
    g = torch.Generator().manual_seed(seed)
    n = len(task.y_train)
    ep = task.epochs if epochs is None else epochs
    total, step = ep * math.ceil(n / task.batch_size), 0
    loss_fn = task.loss_fn or nn.functional.cross_entropy
    for _ in range(ep):
        model.train()
        for idx in torch.randperm(n, generator=g).split(task.batch_size):
            for pg in opt.param_groups:
                pg["lr"] = 0.5 * task.lr * (1 + math.cos(math.pi * step / total))
            opt.zero_grad()
            loss_fn(model(task.x_train[idx]), task.y_train[idx]).backward()
            opt.step()
            step += 1
    return model.eval()


@torch.no_grad()
def accuracy(model: nn.Module, task: PTQTask, batch: int = 1000) -> float:
    """Test metric as a fraction in [0, 1] (correct / counted), as ``lowp compare`` reports it."""
    model.eval()
    c = n = 0
    for xb, yb in zip(task.x_test.split(batch), task.y_test.split(batch)):
        out = model(xb)
        if task.metric_counts is not None:
            ci, ni = task.metric_counts(out, yb)
        else:
            ci, ni = int((out.argmax(-1) == yb).sum()), len(yb)
        c, n = c + ci, n + ni
    return c / max(n, 1)


@torch.no_grad()
def eval_outputs(model: nn.Module, task: PTQTask, batch: int = 1000) -> torch.Tensor:
    """The model's outputs on the whole test set (eval mode)."""
    model.eval()
    return torch.cat([model(xb) for xb in task.x_test.split(batch)])


def fidelity(out: torch.Tensor, ref: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """How close a quantized model's test outputs ``out`` are to the FP32 model's ``ref``, independently of the
    labels: ``fp32_agreement`` = fraction of counted test positions (targets ≠ −100) whose top-1 prediction equals
    the FP32 model's; ``output_rel_error`` = ||out − ref||² / ||ref||²."""
    keep = y != -100 if y.shape == out.shape[:-1] else torch.ones(out.shape[:-1], dtype=torch.bool)
    same = (out.argmax(-1) == ref.argmax(-1)) & keep
    err = float(((out.double() - ref.double()) ** 2).sum() / ((ref.double() ** 2).sum()).clamp(min=1e-300))
    return {"fp32_agreement": int(same.sum()) / max(int(keep.sum()), 1), "output_rel_error": err}


# ----------------------------------------------------------------------------------------------------------------
# configurations

def configurations(args) -> list[tuple[dict[str, Any], Callable]]:
    """(options, quantizer(model, calib) -> model) for every combination of the method's options."""
    from ..techniques import cluster as C, fgq as F, ptq as P, ternary_residual as R
    out = []
    if args.method == "int8":
        for gran, cal, asym, ab in itertools.product(args.granularity, args.calibration, args.asymmetric, args.act_bits):
            cfg = P.PTQConfig(weight_bits=args.weight_bits, weight_granularity=gran, weight_symmetric=not asym,
                              act_bits=ab, act_symmetric=not asym, calibration=cal,
                              skip_first=args.skip_first, skip_last=args.skip_last)
            out.append((cfg.to_dict(), lambda m, c, cfg=cfg: P.ptq_int8(m, c, cfg)))
    elif args.method == "fgq":
        for n, ab in itertools.product(args.group, args.act_bits):
            cfg = F.FGQConfig(group=n, method=args.ternary_method, act_bits=ab, calibration=args.calibration[0],
                              edge_bits=None if args.edge_bits == 0 else args.edge_bits)
            out.append((cfg.to_dict(), lambda m, c, cfg=cfg: F.fgq(m, c, cfg)))
    elif args.method == "cluster":
        for n, kind, ab in itertools.product(args.cluster, args.kind, args.act_bits):
            cfg = C.ClusterConfig(cluster=n, kind=kind, method=args.ternary_method, act_bits=ab,
                                  calibration=args.calibration[0], edge_bits=None if args.edge_bits == 0 else args.edge_bits)
            out.append((cfg.to_dict(), lambda m, c, cfg=cfg: C.cluster_quantize(m, c, cfg)))
    else:
        for r, n, ab in itertools.product(args.terms, args.group, args.act_bits):
            cfg = R.ResidualConfig(group=n, method=args.ternary_method, terms=r, max_terms=max(r, args.max_terms),
                                   budget_bytes=args.budget_bytes, block=args.block, act_bits=ab,
                                   calibration=args.calibration[0],
                                   edge_bits=None if args.edge_bits == 0 else args.edge_bits)
            out.append((cfg.to_dict(), lambda m, c, cfg=cfg: R.ternary_residual(m, c, cfg)))
    return out


def _label(method: str, o: dict[str, Any]) -> str:
    if method == "int8":
        return (f"w{o['weight_bits']}-{o['weight_granularity']}-{o['calibration']}-a{o['act_bits']}"
                + ("-asym" if not o["weight_symmetric"] else ""))
    if method == "fgq":
        return f"N={o['group']} a{o['act_bits']}"
    if method == "cluster":
        return f"{o['kind']} N={o['cluster']} a{o['act_bits']}"
    return f"r={o['terms']} N={o['group']} a{o['act_bits']}" + (f" budget={o['budget_bytes']}" if o["budget_bytes"] else "")


def _finite(v: Any) -> Any:
    """NaN/Inf floats become None, recursively (strict JSON)."""
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, dict):
        return {k: _finite(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_finite(x) for x in v]
    return v


def _pct(v: float | None, fmt: str = ".2f") -> str:
    return "-" if v is None or not math.isfinite(v) else format(100 * v, fmt)


def write_outputs(out: str, res: dict[str, Any]) -> None:
    """results.json, results.md and ptq.png, each written atomically (temporary file, then rename)."""
    from ..experiments import io

    io.atomic_write_json(os.path.join(out, "results.json"), _finite(res))
    name = res.get("metric_name", "metric")
    rows = [f"| configuration | {name} % | Δ vs FP32 (pts) | weight bits | size (bytes) | mults replaced "
            "| agrees with FP32 % |",
            "|---|---|---|---|---|---|---|",
            f"| fp32 | {_pct(res['fp32_metric'])} | +0.00 | 32 | {res['fp32_bytes']} | 0% | 100.00 |"]
    for c in res["configs"]:
        rows.append(f"| {c['label']} | {_pct(c['metric'])} | {_pct(c['metric'] - c['fp32_metric'], '+.2f')} | "
                    f"{c['weight_bits']:.2f} | {c['size_bytes']} | {_pct(c['mult_fraction_replaced'], '.1f')}% | "
                    f"{_pct(c['fp32_agreement'])} |")
    table = "\n".join(rows)
    io.atomic_write_text(os.path.join(out, "results.md"), f"# lowp ptq: {res['task']}, method {res['method']}\n\n"
                                                          f"{table}\n")
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axs = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, xl in ((axs[0], "weight_bits", "weight bits (average)"),
                        (axs[1], "mult_fraction_replaced", "fraction of multiplications replaced")):
        for c in res["configs"]:
            ax.scatter(c[key], 100 * c["metric"])
            ax.annotate(c["label"], (c[key], 100 * c["metric"]), fontsize=7)
        ax.axhline(100 * res["fp32_metric"], color="k", ls="--", lw=1, label="FP32")
        ax.set_xlabel(xl)
        ax.set_ylabel(f"test {name} (%)")
        ax.legend()
    fig.suptitle(f"{res['task']}: {res['method']}")
    fig.tight_layout()
    buf = _io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    io.atomic_write_bytes(os.path.join(out, "ptq.png"), buf.getvalue())
    print(table)


# ----------------------------------------------------------------------------------------------------------------
# the FP32 model cache: keyed by everything that determines it, written atomically, verified on load

def cache_key(task: PTQTask, epochs: int, seed: int) -> dict[str, Any]:
    """What determines the cached FP32 model: task, seed, epochs, SGD hyper-parameters and the lowp/torch versions."""
    from .. import __version__

    return {"task": task.name, "seed": seed, "epochs": epochs, "lr": task.lr, "batch_size": task.batch_size,
            "momentum": task.momentum, "weight_decay": task.weight_decay, "lowp_version": __version__,
            "torch_version": torch.__version__.split("+")[0]}


def cache_path(out: str, key: dict[str, Any]) -> str:
    """``DIR/fp32_<task>-<first 12 hex digits of the key's SHA-256>.pt``: one file per distinct key."""
    from ..experiments.io import safe_filename

    h = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    return os.path.join(out, f"fp32_{safe_filename(key['task'])}-{h}.pt")


def load_cached(path: str, key: dict[str, Any], model: nn.Module) -> str | None:
    """Load the cached state into ``model``; returns None on success, else why the file was not usable (it is then
    to be discarded: unreadable, truncated, not a lowp cache, another key, or weights that do not fit the model).
    ``torch.load(weights_only=True)``: a crafted pickle is refused, never executed."""
    try:
        with warnings.catch_warnings():  # torch warns about foreign pickle protocols: the file is refused anyway
            warnings.simplefilter("ignore")
            blob = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as e:  # noqa: BLE001 - any unreadable file is a corrupt cache
        return f"unreadable ({type(e).__name__})"
    if not isinstance(blob, dict) or set(blob) != {"key", "state_dict"} or not isinstance(blob["state_dict"], dict):
        return "not a lowp ptq cache"
    if blob["key"] != key:
        return "made with other settings"
    try:
        model.load_state_dict(blob["state_dict"])
    except Exception as e:  # noqa: BLE001
        return f"weights do not fit the model ({type(e).__name__})"
    if not all(torch.isfinite(v).all() for v in model.state_dict().values() if v.is_floating_point()):
        return "non-finite weights"
    return None


def save_cached(path: str, key: dict[str, Any], model: nn.Module) -> bool:
    """Write the cache atomically; a failure (a full disk) is a warning: the run goes on without a cache."""
    from ..experiments import io

    buf = _io.BytesIO()
    torch.save({"key": key, "state_dict": model.state_dict()}, buf)
    try:
        io.atomic_write_bytes(path, buf.getvalue())
        return True
    except OSError as e:
        print(f"lowp ptq: warning: cannot write the FP32 model cache {path}: {e.strerror or e}", file=sys.stderr)
        return False


# ----------------------------------------------------------------------------------------------------------------

MAX_SEED = 2**63 - 2  # torch seeds are 64-bit; the calibration subset uses seed + 1


def validate(args) -> tuple[PTQTask, list]:
    """The validation pass of ``lowp ptq``, before anything is written or trained: numbers in range, the task, every
    configuration of the grid, the output folder. Returns (task, configurations)."""
    if isinstance(args.seed, bool) or not 0 <= args.seed <= MAX_SEED:
        raise ValueError(f"--seed must be an integer in 0..{MAX_SEED}, got {args.seed}")
    if args.calib_samples < 1:
        raise ValueError(f"--calib-samples must be positive, got {args.calib_samples}")
    if args.edge_bits != 0 and not 2 <= args.edge_bits <= 16:
        raise ValueError(f"--edge-bits must be 0 (ternary too) or in 2..16, got {args.edge_bits}")
    confs = configurations(args)  # each config validates its options (bits, groups, ...)
    task = get_ptq_task(args.task)
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise ValueError(f"output path {args.out!r} exists and is not a directory")
    try:
        os.makedirs(args.out, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".probe-", dir=args.out)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise ValueError(f"cannot write to output directory {args.out!r}: {e.strerror or e}") from None
    return task, confs


def run(args) -> int:
    from ..experiments.io import locked_dir
    from ..techniques.ptq import model_stats

    task, confs = validate(args)
    with locked_dir(args.out, "lowp ptq"):
        return _run(args, task, confs, model_stats)


def _run(args, task: PTQTask, confs: list, model_stats) -> int:
    torch.manual_seed(args.seed)
    epochs = task.epochs if args.epochs is None else args.epochs
    key = cache_key(task, epochs, args.seed)
    path = cache_path(args.out, key)
    model = task.make_model()
    why = "--retrain" if args.retrain else ("absent" if not os.path.exists(path) else load_cached(path, key, model))
    if why is None:
        model.eval()
        print(f"loaded FP32 model from {path}")
    else:
        if why not in ("absent", "--retrain"):
            print(f"lowp ptq: warning: discarding the FP32 model cache {path}: {why}; retraining", file=sys.stderr)
        t0 = time.time()
        model = train_fp32(task, epochs, args.seed)
        save_cached(path, key, model)
        print(f"trained FP32 {task.name} in {time.time() - t0:.1f}s -> {path}")
    fp32 = accuracy(model, task)
    ref = eval_outputs(model, task)
    g = torch.Generator().manual_seed(args.seed + 1)
    cal_idx = torch.randperm(len(task.y_train), generator=g)[: args.calib_samples]
    calib = list(task.x_train[cal_idx].split(128))
    res = {"task": task.name, "method": args.method, "seed": args.seed, "epochs": epochs, "lr": task.lr,
           "batch_size": task.batch_size, "metric_name": task.metric_name,
           "fp32_metric": fp32, "fp32_bytes": 4 * sum(p.numel() for p in model.parameters()),
           "calib_samples": len(cal_idx), "configs": []}
    for opts, fn in confs:
        t0 = time.time()
        q = fn(model, calib)
        acc = accuracy(q, task)
        fid = fidelity(eval_outputs(q, task), ref, task.y_test)
        st = model_stats(q)
        res["configs"].append({"method": args.method, "label": _label(args.method, opts), "options": opts,
                               "metric": acc, "fp32_metric": fp32, "fp32_delta": acc - fp32, **fid,
                               "weight_bits": st["weight_bits"],
                               "size_bytes": st["size_bytes"], "mults": st["mults"], "macs": st["macs"],
                               "mult_fraction_replaced": st["mult_fraction_replaced"],
                               "wall_s": time.time() - t0})
    write_outputs(args.out, res)
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
    p.add_argument("--group", nargs="+", type=_pos_ints, default=None, help="FGQ / residual group size N")
    p.add_argument("--ternary-method", default="optimal", choices=["optimal", "threshold"])
    p.add_argument("--edge-bits", type=int, default=8, help="first/last layer weight bits for ternary methods "
                                                             "(0: ternary too)")
    p.add_argument("--cluster", nargs="+", type=_pos_ints, default=[4], help="cluster: filters per scale")
    p.add_argument("--kind", nargs="+", default=["ternary"], choices=["ternary", "int4"])
    p.add_argument("--terms", nargs="+", type=_pos_ints, default=[1, 2, 3], help="residual terms (start count)")
    p.add_argument("--max-terms", type=_pos_ints, default=4)
    p.add_argument("--budget-bytes", type=_pos_ints, default=None, help="residual: greedy allocation budget")
    p.add_argument("--block", type=_pos_ints, default=None, help="residual: filters per sensitivity unit")

    def fix(args):
        if args.group is None:
            args.group = [4] if args.method == "fgq" else [64]
        return run(args)
    p.set_defaults(func=fix)
