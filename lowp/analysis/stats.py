"""Numerics statistics of one quantized tensor: pure functions of (x, xq, fmt), where ``x`` is the tensor
before rounding and ``xq`` after it, both in the format's own units (what ``lowp.ops.observe.notify`` passes).

* underflow  = #{x ≠ 0 (finite), xq = 0} / n                       — flushed to zero
* overflow   = #{|x| > fmt.max (x finite)  or  xq non-finite where x is finite} / n — saturated or overflowed
* subnormal  = #{0 < |xq| < fmt.min_normal} / n                     — float formats with subnormals (else 0)
* sqnr_db    = 10·log10(Σx² / Σ(x − xq)²) over finite x; +inf when exact, −inf when xq is non-finite there
* amax       = max |x| over finite x
* exponent histogram: counts of ⌊log2|x|⌋ over finite non-zero x

n counts every element (NaN inputs count in n but in no fraction). Formats without ``max`` (integer formats that
scale to their own amax) report overflow only for non-finite results.
"""
from __future__ import annotations

import math
from typing import Any

import torch

from ..formats import Format


def _max_of(fmt: Any) -> float | None:
    v = fmt.info.max if isinstance(fmt, Format) else None
    return float(v) if v is not None and math.isfinite(v) else None


def underflow_fraction(x: torch.Tensor, xq: torch.Tensor) -> float:
    """Fraction of elements with x ≠ 0 (finite) that were flushed to xq == 0."""
    return float(((x != 0) & (xq == 0) & torch.isfinite(x)).sum()) / max(x.numel(), 1)


def overflow_fraction(x: torch.Tensor, xq: torch.Tensor, fmt: Any) -> float:
    """Fraction of finite x with |x| > fmt.max, or with a non-finite xq (overflow to Inf/NaN)."""
    fin = torch.isfinite(x)
    bad = fin & ~torch.isfinite(xq)
    m = _max_of(fmt)
    if m is not None:
        bad |= fin & (x.abs() > m)
    return float(bad.sum()) / max(x.numel(), 1)


def subnormal_fraction(xq: torch.Tensor, fmt: Any) -> float:
    """Fraction of xq that are subnormal numbers of a float format (0 < |xq| < min_normal); 0 for other formats."""
    mn = getattr(fmt, "min_normal", None)
    if not isinstance(mn, (int, float)) or not getattr(fmt, "subnormals", False):
        return 0.0
    a = xq.abs()
    return float(((a > 0) & (a < mn)).sum()) / max(xq.numel(), 1)


def sqnr_db(x: torch.Tensor, xq: torch.Tensor) -> float:
    """Signal-to-quantization-noise ratio 10·log10(Σx²/Σ(x−xq)²) in dB over finite x (sums in float64).
    +inf when xq == x everywhere, −inf when some xq is non-finite where x is finite or the signal is zero."""
    fin = torch.isfinite(x)
    xd, qd = x[fin].double(), xq[fin].double()
    if not bool(torch.isfinite(qd).all()):
        return -math.inf
    noise = float(((xd - qd) ** 2).sum())
    if noise == 0.0:
        return math.inf
    signal = float((xd * xd).sum())
    return 10.0 * math.log10(signal / noise) if signal > 0 else -math.inf


def amax(x: torch.Tensor) -> float:
    """max |x| over finite elements (0 for an empty or all-non-finite tensor)."""
    a = x.abs()
    a = a[torch.isfinite(a)]
    return float(a.max()) if a.numel() else 0.0


def exponent_histogram(x: torch.Tensor) -> dict[int, int]:
    """Counts of ⌊log2|x|⌋ over finite non-zero elements, as {exponent: count} sorted by exponent."""
    a = x.abs()
    a = a[torch.isfinite(a) & (a > 0)]
    if a.numel() == 0:
        return {}
    _, e = torch.frexp(a.double())  # a = m·2^e with m in [0.5, 1): ⌊log2 a⌋ = e - 1, exact
    vals, counts = torch.unique(e.to(torch.int64) - 1, return_counts=True)
    return {int(v): int(c) for v, c in zip(vals.tolist(), counts.tolist())}


def tensor_stats(x: torch.Tensor, xq: torch.Tensor, fmt: Any, *, histogram: bool = False) -> dict[str, Any]:
    """All statistics of one quantized tensor as a dict (keys: underflow, overflow, subnormal, sqnr_db, amax, n,
    and exp_hist when ``histogram``). Same definitions as the functions above; fast path (few passes, float32
    sums, one synchronisation) when every x and xq is finite, else the reference functions."""
    with torch.no_grad():
        x, xq = x.detach(), xq.detach()
        if x.dtype != torch.float32 or xq.dtype != torch.float32:
            x, xq = x.float(), xq.float()
        n = x.numel()
        if n == 0:
            return {"underflow": 0.0, "overflow": 0.0, "subnormal": 0.0, "sqnr_db": math.inf, "amax": 0.0, "n": 0}
        a, aq = x.abs(), xq.abs()
        d = x - xq
        m = _max_of(fmt)
        mn = getattr(fmt, "min_normal", None)
        sub = isinstance(mn, (int, float)) and getattr(fmt, "subnormals", False)
        vals = torch.stack([
            ((xq == 0) & (x != 0)).sum().float(),
            (a > m).sum().float() if m is not None else a.new_zeros(()),
            ((aq > 0) & (aq < mn)).sum().float() if sub else a.new_zeros(()),
            (x * x).sum(), (d * d).sum(), a.max(), aq.sum() + a.sum(),  # last: finite iff every element is
        ]).tolist()
        if not (math.isfinite(vals[6]) and math.isfinite(vals[3]) and math.isfinite(vals[4])):
            out = {"underflow": underflow_fraction(x, xq), "overflow": overflow_fraction(x, xq, fmt),
                   "subnormal": subnormal_fraction(xq, fmt), "sqnr_db": sqnr_db(x, xq), "amax": amax(x), "n": n}
        else:
            sig, noise = vals[3], vals[4]
            out = {"underflow": vals[0] / n, "overflow": vals[1] / n, "subnormal": vals[2] / n,
                   "sqnr_db": math.inf if noise == 0 else (10 * math.log10(sig / noise) if sig > 0 else -math.inf),
                   "amax": vals[5], "n": n}
        if histogram:
            out["exp_hist"] = exponent_histogram(x)
    return out
