"""Format-accumulated GEMM (``lowp.matmul``) as a ratio to FP32 ``torch.matmul`` of the same shape, measured in the
same run (SPEC §9). Cases: fp16-169 accumulation with chunk 64 on fp8-152 operands (the fp8-ibm recipe's GEMM:
fast path, no round-to-odd correction), fp16 sequential accumulation on fp8-152 operands, and fp16 with chunk 64
on raw fp32 operands (48-bit products: the round-to-odd path). The "path" column says whether the compiled float32 fast path
(lowp/ops/accumulate_compiled.py) or the float64 reference path ran. Baseline and emulation are interleaved; the median
per-round ratio is printed (shared machine: indicative only).

    python benchmarks/bench_accumulate.py [--rounds 3] [--threads N] [--shapes 256x784x1024,64x256x256]
                                          [--cases fp8-chunk64,fp8-sequential,fp32-chunk64] [--json PATH]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

import lowp
import lowp.ops.accumulate_compiled as af

from jsonout import add_json_arg, write_json  # benchmarks/jsonout.py


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--shapes", default="256x784x1024,256x1024x1024,64x256x256")
    ap.add_argument("--cases", default="fp8-chunk64,fp8-sequential,fp32-chunk64",
                    help="which cases to run (the reference-path ones are slow at large shapes)")
    add_json_arg(ap)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    g = torch.Generator().manual_seed(0)
    known = {"fp8-chunk64": ("fp16-169 chunk 64, fp8-152 operands", "fp16-169", 64, "fp8-152"),
             "fp8-sequential": ("fp16 sequential, fp8-152 operands", "fp16", None, "fp8-152"),
             "fp32-chunk64": ("fp16 chunk 64, fp32 operands", "fp16", 64, None)}
    bad = [c for c in args.cases.split(",") if c not in known]
    if bad:
        raise SystemExit(f"bench_accumulate: unknown case(s) {bad}; known: {', '.join(known)}")
    cases = [known[c] for c in args.cases.split(",")]
    print(f"{'M x K x N':>16}  {'case':<38} {'fp32 ms':>9} {'lowp ms':>9} {'ratio':>7}  path")
    records = []
    for shape in args.shapes.split(","):
        m, k, n = (int(v) for v in shape.split("x"))
        a32, b32 = torch.randn(m, k, generator=g), torch.randn(k, n, generator=g)
        for label, acc, chunk, opfmt in cases:
            a = lowp.quantize(a32, opfmt) if opfmt else a32
            b = lowp.quantize(b32, opfmt) if opfmt else b32
            torch.matmul(a, b)
            before = af.fast_calls
            lowp.matmul(a, b, accumulate=acc, chunk=chunk)  # warm-up
            path = "fast" if af.fast_calls > before else "reference"
            base, emu = [], []
            for _ in range(args.rounds):
                base.append(min(timed(lambda: torch.matmul(a, b)) for _ in range(5)))
                emu.append(timed(lambda: lowp.matmul(a, b, accumulate=acc, chunk=chunk)))
            ratio = statistics.median(e / b_ for e, b_ in zip(emu, base))
            print(f"{shape:>16}  {label:<38} {statistics.median(base) * 1e3:9.2f} "
                  f"{statistics.median(emu) * 1e3:9.1f} {ratio:7.1f}x  {path}", flush=True)
            records.append({"shape": shape, "case": label, "accumulate": acc, "chunk": chunk, "operands": opfmt,
                            "fp32_ms": statistics.median(base) * 1e3, "lowp_ms": statistics.median(emu) * 1e3,
                            "ratio": ratio, "path": path})
    write_json(args.json, "accumulate", args, records)


if __name__ == "__main__":
    main()
