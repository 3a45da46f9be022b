"""Activation calibration for post-training quantization: choose a clipping range [lo, hi] from samples.

Methods (TensorRT's "Int8 calibration" for entropy):

- ``minmax``: lo = min x, hi = max x (symmetric: ±max|x|).
- ``percentile``: hi = the p-th percentile (symmetric: of |x|; asymmetric: lo is the (100-p)-th percentile of x).
- ``entropy``: the KL-divergence rule of TensorRT: histogram |x| into ``bins`` bins over [0, max|x|]; for each
  candidate threshold i (bins ``levels``..``bins``), P = hist[:i] with the clipped tail added to its last bin,
  Q = P merged into ``levels`` equal chunks and expanded back uniformly over the non-empty bins of each chunk;
  choose i minimising KL(P || Q); threshold T = (i + 0.5) · bin width. ``levels`` = 2^(bits-1) for signed data and
  2^bits for non-negative data on an asymmetric grid. Asymmetric entropy clips [max(min x, -T), min(max x, T)].
  Deviation from TensorRT: exact zeros are left out of the histogram. They are exact on every grid, and the spike
  of ReLU zeros in bin 0 otherwise dominates KL (the merged first chunk spreads it), pulling T far too low
  (ReLU(N(0,1)): T = 1.75 with zeros against 4.3 for N(0,1); a 70-point accuracy loss on mnist1d-cnn). And data
  with at most ``levels`` distinct magnitudes keeps T = max|x| (KL on such spiky histograms clips absurdly).

Then ``qparams(lo, hi, bits, symmetric)`` gives the scale s and zero point z of an affine grid:
symmetric: q in [-(2^(b-1)-1), 2^(b-1)-1], s = max(|lo|, |hi|)/qmax, z = 0;
asymmetric: q in [0, 2^b - 1], s = (hi - lo)/(2^b - 1) with lo <= 0 <= hi, z = round(-lo/s).
``fake_quant`` rounds x/s + z (nearest-even) on that grid with lowp's shared integer rounding and returns
(q - z)·s in x's dtype; symmetric grids go through ``lowp.formats.IntFormat.quantize_with_scale``.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch

from ..formats import IntFormat
from ..formats.scaled import round_to_int

METHODS = ("minmax", "percentile", "entropy")


@dataclasses.dataclass(frozen=True)
class QParams:
    """An affine integer grid: value = (q - zero_point) * scale, q in [qmin, qmax]."""

    scale: float
    zero_point: int
    qmin: int
    qmax: int

    @property
    def symmetric(self) -> bool:
        return self.zero_point == 0 and self.qmin == -self.qmax

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "QParams":
        return cls(**d)


def check_method(method: str) -> str:
    if method not in METHODS:
        raise ValueError(f"unknown calibration method {method!r}; valid: {', '.join(METHODS)}")
    return method


def _kl_threshold(absx: np.ndarray, bins: int, levels: int) -> float:
    """TensorRT's entropy calibration on |x| samples; returns the clipping threshold."""
    amax = float(absx.max()) if absx.size else 0.0
    if amax == 0.0:
        return 0.0
    hist, edges = np.histogram(absx, bins=bins, range=(0.0, amax))
    hist = hist.astype(np.float64)
    width = edges[1] - edges[0]
    if bins <= levels:
        return amax
    best_kl, best_i = np.inf, bins
    csum_tail = np.cumsum(hist[::-1])[::-1]  # csum_tail[i] = sum(hist[i:])
    for i in range(levels, bins + 1):
        p = hist[:i].copy()
        if i < bins:
            p[i - 1] += csum_tail[i]
        nz = p > 0
        # merge the i reference bins into `levels` chunks (chunk boundaries as TensorRT: floor(j * i / levels))
        idx = (np.arange(i) * levels) // i
        chunk_sum = np.bincount(idx, weights=hist[:i], minlength=levels)
        chunk_nz = np.bincount(idx, weights=nz.astype(np.float64), minlength=levels)
        q = np.where(nz, chunk_sum[idx] / np.maximum(chunk_nz[idx], 1), 0.0)
        ps, qs = p.sum(), q.sum()
        if ps == 0 or qs == 0:
            continue
        pn, qn = p / ps, q / qs
        m = pn > 0
        if np.any(m & (qn == 0)):
            kl = np.inf
        else:
            kl = float(np.sum(pn[m] * np.log(pn[m] / qn[m])))
        if kl < best_kl:
            best_kl, best_i = kl, i
    return (best_i + 0.5) * width if best_i < bins else amax


def calibrate_range(
    x: torch.Tensor,
    method: str = "minmax",
    *,
    symmetric: bool = True,
    bits: int = 8,
    percentile: float = 99.99,
    bins: int = 2048,
) -> tuple[float, float]:
    """Clipping range (lo, hi) for samples ``x`` (any shape; NaN/Inf ignored). See the module docstring."""
    check_method(method)
    if not 0.0 < percentile <= 100.0:
        raise ValueError(f"percentile must be in (0, 100], got {percentile!r}")
    v = x.detach().reshape(-1).double()
    v = v[torch.isfinite(v)]
    if v.numel() == 0:
        return 0.0, 0.0
    mn, mx = float(v.min()), float(v.max())
    if method == "minmax":
        lo, hi = mn, mx
        if symmetric:
            a = max(abs(lo), abs(hi))
            lo, hi = -a, a
        return lo, hi
    arr = v.cpu().numpy()
    if method == "percentile":
        if symmetric:
            a = float(np.percentile(np.abs(arr), percentile))
            return -a, a
        return float(np.percentile(arr, 100.0 - percentile)), float(np.percentile(arr, percentile))
    levels = 2 ** bits if (mn >= 0 and not symmetric) else 2 ** (bits - 1)
    a = np.abs(arr)
    a = a[a > 0]
    # data with no more distinct magnitudes than grid levels (e.g. 4-bit pixels) has nothing to gain from clipping,
    # and its spiky histogram misleads KL (digits pixels: T = 1/16 of the max): keep the max
    t = float(a.max()) if a.size and np.unique(a).size <= levels else _kl_threshold(a, bins, levels)
    if symmetric:
        return -t, t
    return max(mn, -t), min(mx, t)


def qparams(lo: float, hi: float, bits: int = 8, symmetric: bool = True) -> QParams:
    """Scale and zero point of a ``bits``-bit grid covering [lo, hi] (see the module docstring)."""
    if isinstance(bits, bool) or not isinstance(bits, int) or not 2 <= bits <= 16:
        raise ValueError(f"activation bits must be an int in 2..16, got {bits!r}")
    if symmetric:
        qmax = 2 ** (bits - 1) - 1
        a = max(abs(lo), abs(hi))
        return QParams(a / qmax if a > 0 else 1.0, 0, -qmax, qmax)
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    qmax = 2 ** bits - 1
    s = (hi - lo) / qmax if hi > lo else 1.0
    z = int(min(max(round(-lo / s), 0), qmax))
    return QParams(s, z, 0, qmax)


def fake_quant(x: torch.Tensor, qp: QParams) -> torch.Tensor:
    """Round x onto the grid of ``qp`` and return the dequantized values in x's dtype (NaN stays NaN)."""
    if qp.symmetric:
        return IntFormat(bits=max(2, int(qp.qmax + 1).bit_length())).quantize_with_scale(x, qp.scale)
    xd = x.double()
    q = torch.clamp(round_to_int(xd / qp.scale, "nearest", 32, None) + qp.zero_point, qp.qmin, qp.qmax)
    y = ((q - qp.zero_point) * qp.scale).to(x.dtype)
    return torch.where(torch.isnan(x), x, y)


class Observer:
    """Collects activation samples (a seeded random subset once more than ``max_samples`` have been seen)."""

    def __init__(self, max_samples: int = 1 << 18, seed: int = 0) -> None:
        self.max_samples = max_samples
        self._chunks: list[torch.Tensor] = []
        self._n = 0
        self._gen = torch.Generator().manual_seed(seed)

    def observe(self, x: torch.Tensor) -> None:
        v = x.detach().reshape(-1).float()
        if v.numel() > self.max_samples:
            v = v[torch.randperm(v.numel(), generator=self._gen)[: self.max_samples]]
        self._chunks.append(v.clone())
        self._n += v.numel()
        if self._n > 2 * self.max_samples:
            allv = torch.cat(self._chunks)
            allv = allv[torch.randperm(allv.numel(), generator=self._gen)[: self.max_samples]]
            self._chunks, self._n = [allv], allv.numel()

    def samples(self) -> torch.Tensor:
        return torch.cat(self._chunks) if self._chunks else torch.zeros(0)

    def qparams(self, method: str, bits: int, symmetric: bool, percentile: float = 99.99) -> QParams:
        lo, hi = calibrate_range(self.samples(), method, symmetric=symmetric, bits=bits, percentile=percentile)
        return qparams(lo, hi, bits, symmetric)
