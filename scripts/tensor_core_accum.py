"""Tensor-core accumulation model (lowp.matmul with a TensorCoreAccumulator; docs/accelerator-recipes.md, DeepSeek-V3 §3.3.2):
the relative error of long FP8 dot products with a 14-bit truncating accumulator, without promotion and with
promotion to FP32 every 128 products, against plain FP32 (torch.matmul) and the exact sum (float64; the
products of FP8 values are exact). Deterministic (fixed seeds); prints a markdown table.

    PYTHONPATH=. python scripts/tensor_core_accum.py [--k 1024 4096 16384] [--m 8] [--n 8] [--seeds 0 1 2]

Operands: A = E4M3(|N(0,1)| + 0.5) (positive: the running sum grows, as in DeepSeek's K = 4096 measurement of
about 2% error) and B = E4M3(N(0,1)) either zero-mean ("mixed") or |B| ("positive"). The model is an
approximation of the hardware, not a measurement of it (see lowp/ops/tensor_core.py).
"""
from __future__ import annotations

import argparse

import torch

import lowp

ACCS = ["fp32", "tc14", "tc14-p128", "tc14-g32", "tc14-p128-g32", "tc23-rn"]


def operands(m, k, n, seed, positive):
    g = torch.Generator().manual_seed(seed)
    a = (torch.randn(m, k, generator=g).abs() + 0.5).to(torch.float8_e4m3fn).float()
    b = torch.randn(k, n, generator=g)
    b = (b.abs() if positive else b).to(torch.float8_e4m3fn).float()
    return a, b


def rel_err(y, exact):
    return ((y.double() - exact).abs() / exact.abs().clamp(min=1e-30))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--k", type=int, nargs="+", default=[1024, 4096, 16384])
    p.add_argument("--m", type=int, default=8)
    p.add_argument("--n", type=int, default=8)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = p.parse_args()
    print("| operands | K | " + " | ".join(f"{a} mean / max rel. err" for a in ACCS) + " |")
    print("|---|---|" + "---|" * len(ACCS))
    for positive in (True, False):
        for k in args.k:
            errs = {a: [] for a in ACCS}
            for seed in args.seeds:
                a, b = operands(args.m, k, args.n, seed, positive)
                exact = a.double() @ b.double()
                for acc in ACCS:
                    y = a @ b if acc == "fp32" else lowp.matmul(a, b, accumulate=acc)
                    errs[acc].append(rel_err(y, exact))
            cells = []
            for acc in ACCS:
                e = torch.cat([x.reshape(-1) for x in errs[acc]])
                cells.append(f"{float(e.mean()):.2e} / {float(e.max()):.2e}")
            print(f"| {'positive' if positive else 'mixed'} | {k} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
