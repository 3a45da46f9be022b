"""A parameterised model of a tensor-core accumulator (docs/accelerator-recipes.md): limited alignment precision, promoted to FP32.

Source: DeepSeek-V3 technical report (2024, §3.3.2): FP8 GEMMs on Hopper "retain around 14 bits" of
accumulation precision; their recipe copies the partial sums to FP32 registers on CUDA cores every N_c = 128
reduction elements ("promotion"). The model is an **approximation** of that behaviour, not a description of a
documented circuit (NVIDIA does not publish the adder design); the alignment-then-truncation scheme follows the
tensor-core studies of Fasi, Higham, Mikaitis & Pranesh (2021, "Numerical behavior of NVIDIA tensor cores").

``TensorCoreAccumulator(man=14, align="truncate", promote=128, group=1)`` computes C[m, n] = Σ_k a[m, k]·b[k, n]:

    products   p_k = a[m, k]·b[k, n], exact (float64; exact for operands of up to 26 significant bits, e.g.
               FP8/BF16/FP16, and for FP32 operands: 24 + 24 <= 53)
    register   K is cut into promotion intervals of ``promote`` consecutive indices (None: one interval). In an
               interval the register r starts at 0; the products enter ``group`` at a time (the width of one
               fused multi-add): with E = max floor(log2|t|) over r and the group's nonzero products t, every
               term t is replaced by align(t / 2^(E-man))·2^(E-man) (align = truncation toward zero, or
               round-to-nearest-even with align="nearest") and r becomes their exact sum (a carry may give it
               one more bit, which the next step's alignment drops). So every term keeps at most ``man`` bits
               below the largest exponent present: small addends are swamped. A zero product is a step like any
               other (r is re-aligned); the zero padding of a short last interval is not.
    promotion  the interval results r_j are added into an FP32 accumulator F with one FP32 rounding each
               (RNE): F = RN32(r_1), F <- RN32(F + r_j). The output is F (float32).

(Exponents below float64's normal range count as 2^-1022; only float64 operands whose products fall below
2^-1022 could notice.) So promote=None with man=23 and align="nearest", group=1 is close to (not the same as) plain sequential FP32
summation. NaN/±Inf products give the IEEE float64 sum's NaN/±Inf for that output (we do not model the hardware's
special-value handling). Vectorised: the Python loop runs over the positions inside one promotion interval
(promote/group steps, all intervals and all M×N outputs at once), then over the intervals for the FP32 sum;
never per element.
"""
from __future__ import annotations

import dataclasses
import re

import torch

from ..formats import get_format

ALIGNS = ("truncate", "nearest")
_EXP_MASK = 0x7FF0000000000000
_NAME = re.compile(r"tc(\d+)(?:-p(\d+))?(?:-g(\d+))?(-rn)?")


@dataclasses.dataclass(frozen=True)
class TensorCoreAccumulator:
    """Accumulator model (module docstring): ``man`` bits kept below the leading exponent, ``align`` rounding,
    promotion to FP32 every ``promote`` reduction elements (None: never), ``group`` products per fused add."""

    man: int = 14
    align: str = "truncate"
    promote: int | None = 128
    group: int = 1

    def __post_init__(self) -> None:
        if isinstance(self.man, bool) or not isinstance(self.man, int) or not 1 <= self.man <= 40:
            raise ValueError(f"TensorCoreAccumulator man must be an int in 1..40, got {self.man!r}")
        if self.align not in ALIGNS:
            raise ValueError(f"unknown alignment rounding {self.align!r}; valid: {', '.join(ALIGNS)}")
        if self.promote is not None and (isinstance(self.promote, bool) or not isinstance(self.promote, int)
                                         or self.promote < 1):
            raise ValueError(f"TensorCoreAccumulator promote must be a positive int or None, got {self.promote!r}")
        if isinstance(self.group, bool) or not isinstance(self.group, int) or not 1 <= self.group <= 256:
            raise ValueError(f"TensorCoreAccumulator group must be an int in 1..256, got {self.group!r}")
        if self.promote is not None and self.promote % self.group:
            raise ValueError(f"TensorCoreAccumulator promote {self.promote} must be a multiple of group {self.group}")

    @property
    def name(self) -> str:
        return (f"tc{self.man}" + (f"-p{self.promote}" if self.promote else "") +
                (f"-g{self.group}" if self.group > 1 else "") + ("-rn" if self.align == "nearest" else ""))


def get_accumulator(spec: str | TensorCoreAccumulator) -> TensorCoreAccumulator:
    """``tc<MAN>[-p<PROMOTE>][-g<GROUP>][-rn]`` (e.g. ``tc14-p128``; no -p: never promoted) or an instance."""
    if isinstance(spec, TensorCoreAccumulator):
        return spec
    m = _NAME.fullmatch(str(spec).strip().lower())
    if not m:
        raise ValueError(f"unknown accumulator {spec!r}; expected tc<MAN>[-p<PROMOTE>][-g<GROUP>][-rn], e.g. tc14-p128")
    return TensorCoreAccumulator(int(m[1]), "nearest" if m[4] else "truncate", int(m[2]) if m[2] else None,
                                 int(m[3]) if m[3] else 1)


def _quantum(big: torch.Tensor, man: int) -> torch.Tensor:
    """2^(floor(log2 big) - man) for float64 big >= 0, from the exponent bits (big < 2^-1022, i.e. 0, counts as
    2^-1022: only float64 operands with products below 2^-1022 could see the difference)."""
    top = (big.view(torch.int64) & _EXP_MASK).view(torch.float64)  # 2^floor(log2 big) for normal big, else 0
    return torch.clamp(top, min=2.0**-1022) * 2.0**-man


def _align(t: torch.Tensor, q: torch.Tensor, mode: str) -> torch.Tensor:
    v = t / q  # exact: q is a power of two and t/q stays in float64's normal range here
    v = torch.trunc(v) if mode == "truncate" else torch.round(v)
    return v * q


def tensor_core_matmul3(a: torch.Tensor, b: torch.Tensor, acc: TensorCoreAccumulator) -> torch.Tensor:
    """a (B, M, K), b (B, K, N) -> (B, M, N) float32 per the module docstring."""
    a64, b64 = a.to(torch.float64), b.to(torch.float64)
    nb, m, k = a64.shape
    n = b64.shape[-1]
    if k == 0:
        return torch.zeros(nb, m, n, dtype=torch.float32, device=a64.device)
    special = torch.matmul(a64, b64)  # IEEE float64 sum: where it is NaN/Inf, that is the output
    g = acc.group
    c = acc.promote if acc.promote is not None else -(-k // g) * g
    nint = -(-k // c)
    pad = nint * c - k
    if pad:
        a64 = torch.nn.functional.pad(a64, (0, pad))
        b64 = torch.nn.functional.pad(b64, (0, 0, 0, pad))
    fin_a = torch.where(torch.isfinite(a64), a64, torch.zeros_like(a64))
    fin_b = torch.where(torch.isfinite(b64), b64, torch.zeros_like(b64))
    # (B, nint, steps, g, M) and (B, nint, steps, g, N)
    steps = c // g
    at = fin_a.transpose(1, 2).reshape(nb, nint, steps, g, m)
    bt = fin_b.reshape(nb, nint, steps, g, n)
    last = k - (nint - 1) * c  # products in the last interval; its groups past them are padding and skipped
    r = torch.zeros(nb, nint, m, n, dtype=torch.float64, device=a64.device)
    for i in range(steps):
        sl = slice(None) if i * g < last else slice(0, nint - 1)  # (re-aligning r for a padded group would round it)
        p = at[:, sl, i].unsqueeze(-1) * bt[:, sl, i].unsqueeze(-2)  # (B, nint', g, M, N), exact
        rs = r[:, sl]
        pa = p.abs().squeeze(2) if g == 1 else p.abs().amax(2)
        q = _quantum(torch.maximum(rs.abs(), pa), acc.man)
        pal = _align(p.squeeze(2), q, acc.align) if g == 1 else _align(p, q.unsqueeze(2), acc.align).sum(2)
        r[:, sl] = _align(rs, q, acc.align) + pal  # exact: <= 257 multiples of q below 2^(e+1), man + 10 <= 53
    from .accumulate import _Rounder

    rounder = _Rounder(get_format("fp32"), fast=False, odd=True)  # RN32(F + r_j), exact (TwoSum + round-to-odd)
    f = get_format("fp32").quantize(r[:, 0])
    for j in range(1, nint):
        rounder.add_(f, r[:, j].clone(), None)
    out = f.to(torch.float32)
    return torch.where(torch.isfinite(special), out, special.to(torch.float32))
