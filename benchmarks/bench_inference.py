"""Real low-precision inference on the CPU: FP32 vs BF16 (oneDNN) vs INT8 lowp Int8Linear on fbgemm's prepacked
int8 GEMM and on torch._int_mm (``kernel="auto"``, lowp's default, takes fbgemm up to 32 rows and _int_mm above:
the faster of the two rows at each batch), vs INT8 torch.ao dynamic quantized Linear,
for a Linear-heavy MLP 1024-4096-4096-1024, at batch 1 and 256. Prints throughput ratios to FP32 measured in the
same run (median of repeats), the max |error| vs FP32 of each variant, and whether lowp's two INT8 kernels gave
bit-identical outputs. Timings on a shared machine are noisy: indicative only.

    python benchmarks/bench_inference.py [--threads 1] [--repeats 7] [--json PATH]
"""
from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch
from torch import nn

from lowp.techniques.lowp_exec import dynamic_int8, fbgemm_exact, to_bf16, to_int8

from jsonout import add_json_arg, write_json  # benchmarks/jsonout.py


def timeit(fn, x, repeats: int, min_time: float = 0.2) -> float:
    with torch.no_grad():
        fn(x)
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < min_time / 4:
            fn(x)
            n += 1
        n = max(1, n)
        ts = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            for _ in range(n):
                fn(x)
            ts.append((time.perf_counter() - t0) / n)
    return statistics.median(ts)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--sizes", default="1024,4096,4096,1024")
    add_json_arg(ap)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    sizes = [int(s) for s in args.sizes.split(",")]
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    model = nn.Sequential(*layers).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        variants = {"fp32": model, "bf16": to_bf16(model)}
        if fbgemm_exact():
            variants["int8 (lowp fbgemm)"] = to_int8(model, kernel="fbgemm")
        variants["int8 (lowp _int_mm)"] = to_int8(model, kernel="int_mm")
        variants["int8 (ao dynamic)"] = dynamic_int8(model)
    print(f"MLP {args.sizes}, {args.threads} thread(s), cpu capability {torch.backends.cpu.get_cpu_capability()}")
    print(f"{'batch':>5}  {'variant':<19} {'ms/batch':>9} {'samples/s':>10} {'x FP32':>7}  max|err| vs FP32")
    records, identical = [], {}
    for batch in (1, 256):
        x = torch.randn(batch, sizes[0])
        with torch.no_grad():
            ref = model(x)
        base = None
        outs = {}
        for name, m in variants.items():
            t = timeit(m, x, args.repeats)
            base = base or t
            with torch.no_grad():
                outs[name] = m(x)
            err = float((outs[name] - ref).abs().max())
            print(f"{batch:>5}  {name:<19} {1e3 * t:>9.3f} {batch / t:>10.0f} {base / t:>7.2f}  {err:.3g}")
            records.append({"batch": batch, "variant": name, "ms": 1e3 * t, "samples_per_s": batch / t,
                            "x_fp32": base / t, "max_err": err})
        if "int8 (lowp fbgemm)" in outs:
            same = torch.equal(outs["int8 (lowp fbgemm)"], outs["int8 (lowp _int_mm)"])
            print(f"{'':>5}  lowp fbgemm and _int_mm outputs bit-identical: {same}")
            identical[str(batch)] = same
        else:
            print(f"{'':>5}  fbgemm's int8 Linear is not available or not exact here: lowp runs on _int_mm")
            identical[str(batch)] = None
    write_json(args.json, "inference", args, records, int8_kernels_bit_identical=identical)


if __name__ == "__main__":
    main()
