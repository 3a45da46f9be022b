"""lowp's tensor-core accumulation model against the GPU: ``lowp.matmul(a, b, accumulate=TensorCoreAccumulator(...))``
next to ``torch._scaled_mm`` (cuBLASLt FP8 GEMM) on the same E4M3 operands, on an H100/H200-class GPU.

Inputs are crafted to expose swamping (docs/accelerator-recipes.md; DeepSeek-V3 §3.3.2): long reductions (K >= 4096)
of FP8 products with unit scales, so every product is exact and the only differences are in how the sum is
accumulated:

  swamp      each row of A starts with one large value (448) followed by K-1 small ones (E4M3 of 2^-6..2^-3), B
             positive in [0.5, 2): the small products fall below the accumulator's kept bits after the first one
  positive   A = E4M3(|N(0,1)| + 0.5), B = E4M3(|N(0,1)|): a growing positive sum (DeepSeek's K = 4096 setting)
  mixed      A as above, B = E4M3(N(0,1)): zero-mean products
  cancel     A positive, B alternating large (+-64) and small values: big partial sums cancel, small terms remain

cuBLASLt is run with ``use_fast_accum=True`` (no promotion: the tensor core's own accumulator over all of K) and
``False`` (CUTLASS/cuBLAS promote partial sums to FP32 registers periodically). Each is compared, output by output,
with a grid of accumulator models (``man`` bits kept, promotion interval, products per fused add ``group``,
truncation or round-to-nearest alignment): the fraction of bit-identical FP32 outputs, the largest distance in
FP32 ulps, and each side's mean relative error against the exact sum (float64; FP8 products are exact). The model
is an approximation, not a description of the circuit (lowp/ops/tensor_core.py): this script measures how close.

    python scripts/tensor_core_scaled_mm.py [--k 4096 16384] [--mn 64] [--seed 0]
                                            [--out docs/results/tensor-core-gpu.md]

Without a CUDA device it prints one line and exits with status 2. Run time on an H200: about a minute for the
defaults (the model's loop is over the K positions of a promotion interval, all outputs at once).
"""
from __future__ import annotations

import argparse
import pathlib
import sys
import time

import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from lowp import TensorCoreAccumulator, matmul  # noqa: E402

E4M3 = torch.float8_e4m3fn
MODELS = [TensorCoreAccumulator(man, align, promote, group)
          for man in (13, 14, 15, 16, 23)
          for promote in (None, 128)
          for group in (1, 4, 32)
          for align in ("truncate", "nearest")
          if promote is None or promote % group == 0]


def operands(kind: str, m: int, k: int, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(a (m, k), b (k, n)) float32 tensors holding E4M3 values (see the module docstring)."""
    g = torch.Generator().manual_seed(seed)
    e4 = lambda t: t.to(E4M3).float()  # noqa: E731
    if kind == "swamp":
        a = e4(2.0 ** (-6 + 3 * torch.rand(m, k, generator=g)))
        a[:, 0] = 448.0
        b = e4(0.5 + 1.5 * torch.rand(k, n, generator=g))
    elif kind == "positive":
        a = e4(torch.randn(m, k, generator=g).abs() + 0.5)
        b = e4(torch.randn(k, n, generator=g).abs())
    elif kind == "mixed":
        a = e4(torch.randn(m, k, generator=g).abs() + 0.5)
        b = e4(torch.randn(k, n, generator=g))
    elif kind == "cancel":
        a = e4(torch.rand(m, k, generator=g) + 0.5)
        big = torch.where(torch.arange(k) % 2 == 0, 64.0, -64.0).unsqueeze(1).expand(k, n)
        small = 2.0 ** (-4 + 2 * torch.rand(k, n, generator=g))
        b = e4(torch.where(torch.rand(k, n, generator=g) < 0.5, big, small))
    else:
        raise ValueError(f"unknown input kind {kind!r}")
    return a, b


def ulps(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Distance in float32 ulps (ordered bit patterns; +0 and -0 are 0 apart)."""
    def ordered(t):
        i = t.float().contiguous().view(torch.int32).to(torch.int64)
        return torch.where(i < 0, -(i & 0x7FFFFFFF), i)
    return (ordered(x) - ordered(y)).abs()


def scaled_mm(a: torch.Tensor, b: torch.Tensor, fast: bool) -> torch.Tensor:
    """cuBLASLt FP8 GEMM of E4M3 a (row-major) and b (column-major), unit scales, FP32 output."""
    one = torch.ones((), dtype=torch.float32, device=a.device)
    return torch._scaled_mm(a.to(E4M3), b.t().contiguous().to(E4M3).t(), scale_a=one, scale_b=one,
                            out_dtype=torch.float32, use_fast_accum=fast)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--k", type=int, nargs="+", default=[4096, 16384])
    ap.add_argument("--mn", type=int, default=64, help="M = N (a multiple of 16)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--kinds", nargs="+", default=["swamp", "positive", "mixed", "cancel"])
    ap.add_argument("--out", default="docs/results/tensor-core-gpu.md")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("tensor_core_scaled_mm: no CUDA device (torch.cuda.is_available() is False); nothing measured",
              file=sys.stderr)
        raise SystemExit(2)
    dev = torch.device("cuda")
    name = torch.cuda.get_device_name(dev)
    cap = torch.cuda.get_device_capability(dev)
    if cap < (8, 9):
        print(f"tensor_core_scaled_mm: {name} (sm_{cap[0]}{cap[1]}) has no FP8 tensor cores (needs sm_89+); "
              f"nothing measured", file=sys.stderr)
        raise SystemExit(2)
    t0 = time.time()
    lines = [f"# Tensor-core accumulation model vs `torch._scaled_mm` on {name}", "",
             f"Measured by `python scripts/tensor_core_scaled_mm.py --k {' '.join(map(str, args.k))} --mn {args.mn} "
             f"--seed {args.seed}` (torch {torch.__version__}, CUDA {torch.version.cuda}, sm_{cap[0]}{cap[1]}). "
             "E4M3 operands, unit scales, FP32 output; `identical` is the fraction of the M×N outputs whose FP32 bits "
             "equal cuBLASLt's, `max ulp` the largest distance in FP32 ulps, `rel err` the mean relative error "
             "against the exact sum (float64), model / GPU. The model is an approximation (lowp/ops/tensor_core.py).",
             ""]
    summary = ["## Best model per input and cuBLASLt mode", "",
               "| K | input | cuBLASLt | best model | identical | max ulp | rel err model / GPU |",
               "|---|---|---|---|---|---|---|"]
    detail = ["## Every model", "", "| K | input | cuBLASLt | model | identical | max ulp | rel err model / GPU |",
              "|---|---|---|---|---|---|---|"]
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    def write(note: str) -> None:  # after every input, so a run cut short still leaves its measurements
        out.write_text("\n".join(lines + summary + [""] + detail + ["", note]) + "\n")

    for k in args.k:
        for kind in args.kinds:
            a, b = operands(kind, args.mn, k, args.mn, args.seed)
            a, b = a.to(dev), b.to(dev)
            exact = a.double() @ b.double()  # FP8 x FP8 products and their float64 sum: exact at these K
            den = exact.abs().clamp(min=1e-30)
            models = {acc.name: matmul(a, b, accumulate=acc) for acc in MODELS}
            for fast in (True, False):
                mode = "fast accum" if fast else "default (promoted)"
                gpu = scaled_mm(a, b, fast)
                gerr = float(((gpu.double() - exact).abs() / den).mean())
                rows = []
                for mname, y in models.items():
                    same = float((y.view(torch.int32) == gpu.view(torch.int32)).double().mean())
                    err = float(((y.double() - exact).abs() / den).mean())
                    rows.append((same, -int(ulps(y, gpu).max()), mname, err))
                    detail.append(f"| {k} | {kind} | {mode} | `{mname}` | {same:.4f} | {-rows[-1][1]} | "
                                  f"{rows[-1][3]:.2e} / {gerr:.2e} |")
                best = max(rows)
                ties = sum(r[:2] == best[:2] for r in rows) - 1  # models as close (e.g. equivalent at this K)
                summary.append(f"| {k} | {kind} | {mode} | `{best[2]}`{f' (+{ties} as close)' if ties else ''} | "
                               f"{best[0]:.4f} | {-best[1]} | "
                               f"{best[3]:.2e} / {gerr:.2e} |")
                print(f"K={k} {kind:<8} {mode:<18} best {best[2]:<16} identical {best[0]:.4f} max ulp {-best[1]} "
                      f"rel err {best[3]:.2e} vs GPU {gerr:.2e}", flush=True)
            write(f"Partial: stopped after K = {k}, input {kind} ({time.time() - t0:.0f} s).")
    write(f"Run time {time.time() - t0:.0f} s.")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
