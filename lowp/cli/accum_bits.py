"""``lowp accum-bits``: accumulation bit-width analysis (Sakr et al. 2019; ``lowp.analysis.vrr``).

    lowp accum-bits --length 4096 --product-man 5 [--chunk 64] [--json]
    lowp accum-bits --task mnist1d-cnn --product-man 5 [--chunk 64] [--json]
"""
from __future__ import annotations

import json
import math

from . import CLIError


MAX_LENGTH = 2**40  # accumulation lengths beyond this are not GEMMs anyone runs


def _table(header: list[str], rows: list[list[str]]) -> str:
    w = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(x) for h, x in zip(header, w)).rstrip()]
    lines += ["  ".join(v.ljust(x) for v, x in zip(r, w)).rstrip() for r in rows]
    return "\n".join(lines)


def _crit(args) -> dict:
    return {"criterion": args.criterion, "cutoff": args.cutoff, "eps": args.eps}


def run_length(args) -> int:
    from ..analysis.vrr import MAX_ACC_BITS, min_accumulator_bits, vrr_table

    n, mp, c = args.length, args.product_man, args.chunk
    rows = vrr_table(range(1, MAX_ACC_BITS + 1), mp, n, c)
    try:
        best = min_accumulator_bits(n, mp, c, **_crit(args))
    except ValueError:
        best = None
    if args.json:
        print(json.dumps({"length": n, "product_man": mp, "chunk": c, "criterion": args.criterion,
                          "min_acc_bits": best, "vrr": {str(r.m_acc): r.vrr for r in rows},
                          "retained": {str(r.m_acc): r.retained for r in rows}}, indent=2))
        return 0
    print(f"accumulation of n={n} products with {mp} mantissa bits"
          + (f", chunk {c}" if c else ", sequential") + " (round to nearest after each add)")
    cells = [[str(r.m_acc), f"{r.vrr:.6f}", f"{r.retained:.6f}", f"{r.n * (1 - r.retained):.3g}",
              "<- min" if r.m_acc == best else ""] for r in rows]
    print(_table(["m_acc", "VRR", "retained", "n(1-retained)", ""], cells))
    crit = (f"v(n)=exp(n(1-retained)) < {args.cutoff:g}" if args.criterion == "v"
            else f"1-retained < {args.eps:g}")
    print(f"minimum accumulator mantissa bits ({crit}): {best if best is not None else f'> {MAX_ACC_BITS}'}")
    return 0


def run_task(args) -> int:
    from ..experiments.task_analysis import task_accum_bits

    d = task_accum_bits(args.task, args.product_man, args.chunk, args.batch, **_crit(args))
    rows = d["gemms"]
    if args.json:
        print(json.dumps({"task": args.task, "product_man": args.product_man, "chunk": args.chunk,
                          "batch": d["batch"], "criterion": args.criterion, "gemms": rows}, indent=2))
        return 0
    print(f"task {args.task}: batch {d['batch']}, products with {args.product_man} mantissa bits")
    header = ["layer", "kind", "pass", "n", "min_acc_bits"] + (["chunked"] if args.chunk else [])
    cells = [[r["layer"], r["kind"], r["pass"], str(r["n"]), str(r["min_acc_bits"])]
             + ([str(r["min_acc_bits_chunked"])] if args.chunk else []) for r in rows]
    print(_table(header, cells))
    return 0


def run(args) -> int:
    if (args.length is None) == (args.task is None):
        raise CLIError("give exactly one of --length N or --task NAME")
    if args.length is not None and args.length < 1:
        raise CLIError(f"--length must be >= 1, got {args.length}")
    if not 0 <= args.product_man <= 23:
        raise CLIError(f"--product-man must be in 0..23, got {args.product_man}")
    if args.chunk is not None and args.chunk < 1:
        raise CLIError(f"--chunk must be >= 1, got {args.chunk}")
    if args.length is not None and args.length > MAX_LENGTH:
        raise CLIError(f"--length must be at most {MAX_LENGTH}, got {args.length}")
    # v(n) = exp(n(1 - VRR)) >= 1: a cut-off at or below 1 (or NaN) can never be met; the lost fraction is in (0, 1)
    if not (math.isfinite(args.cutoff) and args.cutoff > 1):
        raise CLIError(f"--cutoff must be a finite number > 1 (a bound on v(n) >= 1), got {args.cutoff}")
    if not (math.isfinite(args.eps) and 0 < args.eps < 1):
        raise CLIError(f"--eps must be a number in (0, 1) (a fraction of variance lost), got {args.eps}")
    if args.batch is not None:
        if args.task is None:
            raise CLIError("--batch needs --task")
        if args.batch < 1:
            raise CLIError(f"--batch must be >= 1, got {args.batch}")
    return run_length(args) if args.length is not None else run_task(args)


def register(sub) -> None:
    p = sub.add_parser(
        "accum-bits", help="minimum accumulator mantissa bits (variance retention ratio, Sakr et al. 2019)",
        description="Variance retention ratio of a length-N accumulation per accumulator mantissa width, and the "
                    "minimum width; or, with --task, the minimum width of every GEMM of a task's model (forward "
                    "n = k*C_in, backward n = k*C_out, weight gradient n = batch*H*W).")
    p.add_argument("--length", type=int, help="accumulation length N (dot-product length)")
    p.add_argument("--task", help="a task name (see lowp compare): analyse every GEMM of its model")
    p.add_argument("--product-man", type=int, default=5,
                   help="mantissa bits of the products (default 5: product of two E5M2/(1,5,2) values)")
    p.add_argument("--chunk", type=int, default=None, help="chunked accumulation with this chunk size")
    p.add_argument("--batch", type=int, default=None, help="--task: batch size for weight gradients (default: "
                                                           "the task's)")
    p.add_argument("--criterion", choices=["v", "relative"], default="v",
                   help="v: exp(n(1-VRR)) < cutoff (Sakr et al.); relative: 1-VRR < eps")
    p.add_argument("--cutoff", type=float, default=50.0, help="cut-off on v(n) (default 50)")
    p.add_argument("--eps", type=float, default=1e-3, help="relative criterion's lost fraction (default 1e-3)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)
