"""K-TanH throughput against torch.tanh on 2^24 values, measured in the same run (SPEC §7, issue 10).

Rows: torch.tanh on BF16 and on float32 (the baselines), lowp.ktanh's eager int16 core on BF16 and float32 input
(float32 includes the cast to BF16 and back), the same core under torch.compile (lowp's lazily compiled twin, the
default for >= 2^16 elements; compile time excluded), and for reference a full 65,536-entry lookup table indexed by
the BF16 pattern (what one pure gather costs in torch). Each is timed as the median of --reps runs,
interleaved; the ratio is baseline time / K-TanH time (> 1: K-TanH faster). Timings on a shared machine are noisy:
indicative only.

    python benchmarks/bench_ktanh.py [--log2n 24] [--reps 7] [--threads 1] [--no-compile] [--json PATH]
"""
from __future__ import annotations

import argparse
import pathlib
import statistics
import sys
import time

import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # run from a checkout without installing
from lowp.ops import ktanh as K  # noqa: E402

from jsonout import add_json_arg, write_json  # noqa: E402  (benchmarks/jsonout.py)


def timeit(fn, reps):
    fn()
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return ts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--log2n", type=int, default=24)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-compile", action="store_true")
    add_json_arg(ap)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    n = 1 << args.log2n
    g = torch.Generator().manual_seed(0)
    xf = torch.randn(n, generator=g) * 2
    xb = xf.to(torch.bfloat16)
    bits = xb.view(torch.int16)
    table = K.load_table("max")
    lut = K.ktanh_bits(torch.arange(-32768, 32768, dtype=torch.int32).to(torch.int16))  # by pattern + 32768

    rows = {
        "torch.tanh bf16": lambda: torch.tanh(xb),
        "torch.tanh fp32": lambda: torch.tanh(xf),
        "ktanh eager bf16": lambda: K.ktanh(xb, compiled=False),
        "ktanh eager fp32": lambda: K.ktanh(xf, compiled=False),
        "64K LUT gather bf16": lambda: lut.index_select(0, bits.to(torch.int32) + 32768).view(torch.bfloat16),
    }
    if not args.no_compile:
        t0 = time.perf_counter()
        y = K.ktanh_bits(bits, table, compiled=True)
        c = K.cached("ktanh")
        if c is not None and c.ok:
            print(f"torch.compile of the core: {time.perf_counter() - t0:.1f} s (excluded)")
            assert torch.equal(y, K.ktanh_bits(bits, table, compiled=False)), "compiled core differs from eager"
            rows["ktanh compiled bf16"] = lambda: K.ktanh(xb, compiled=True)
            rows["ktanh compiled fp32"] = lambda: K.ktanh(xf, compiled=True)
        else:
            print("torch.compile unavailable: compiled rows skipped")
    times = {k: [] for k in rows}
    for _ in range(args.reps):  # interleave rows so drifts in machine load hit all of them
        for k, fn in rows.items():
            times[k] += timeit(fn, 1)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"n = 2^{args.log2n}, threads = {args.threads}, median of {args.reps}")
    print(f"{'row':24s} {'ms':>9s} {'Gelem/s':>8s} {'vs tanh bf16':>13s} {'vs tanh fp32':>13s}")
    records = []
    for k, t in med.items():
        print(f"{k:24s} {t * 1e3:9.2f} {n / t / 1e9:8.3f} {med['torch.tanh bf16'] / t:13.2f} "
              f"{med['torch.tanh fp32'] / t:13.2f}")
        records.append({"row": k, "ms": t * 1e3, "gelem_s": n / t / 1e9, "vs_tanh_bf16": med["torch.tanh bf16"] / t,
                        "vs_tanh_fp32": med["torch.tanh fp32"] / t})
    write_json(args.json, "ktanh", args, records)


if __name__ == "__main__":
    main()
