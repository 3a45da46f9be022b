"""Ternary weights with a scale per group (Mellempudi et al. 2017, fine-grained quantization).

Groups of ``group`` consecutive elements along the reduction dimension (for a weight of shape (out, in, ...), the
flattened (in, ...) dims; for a 1-D tensor the whole tensor) are approximated as alpha * t, t in {-1, 0, +1}.
method="optimal": the exact minimiser of ||w - alpha t||^2 for the group: sort |w| descending, keep the k largest
with k maximising (sum of top-k |w|)^2 / k, alpha = their mean. method="threshold": t = sign(w)[|w| > 0.7 mean|w|],
alpha = mean |w| over the kept entries. A group that does not fill up (the last one) is padded with zeros, which
are never kept and do not count in the threshold's mean. NaN in a group makes that group NaN. ±Inf is left out of
its group's alpha and saturates to ±alpha (as integer grids saturate ±Inf to ±max; ±Inf where the group has no
finite non-zero value), so its finite neighbours stay finite.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any

import torch

from .base import Format, FormatInfo
from .scaled import group_view

METHODS = ("optimal", "threshold")


def ternarize_groups(g: torch.Tensor, method: str = "optimal",
                     count: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """For g of shape (..., N): return (alpha of shape (..., 1), t in {-1,0,1} of g's shape). ``count`` (shape
    (..., 1)): how many entries of each group are real (the rest is zero padding, left out of the threshold's
    mean); default N."""
    a = g.abs()
    if method == "optimal":
        srt, order = torch.sort(a, dim=-1, descending=True)
        csum = torch.cumsum(srt.double(), dim=-1)
        k = torch.arange(1, g.shape[-1] + 1, dtype=torch.float64, device=g.device)
        best = torch.argmax(csum * csum / k, dim=-1, keepdim=True)  # first maximiser
        kept_sorted = torch.arange(g.shape[-1], device=g.device) <= best
        mask = torch.zeros_like(kept_sorted).scatter(-1, order, kept_sorted)
    elif method == "threshold":
        n = g.shape[-1] if count is None else count.clamp(min=1)
        delta = 0.7 * a.sum(dim=-1, keepdim=True) / n
        mask = a > delta
    else:
        raise ValueError(f"unknown ternary method {method!r}; valid: {', '.join(METHODS)}")
    mask = mask & (a > 0)
    cnt = mask.sum(dim=-1, keepdim=True)
    alpha = (a.double() * mask).sum(dim=-1, keepdim=True) / cnt.clamp(min=1)
    t = torch.sign(g) * mask
    return alpha.to(g.dtype), t


@dataclasses.dataclass(frozen=True)
class TernaryFormat(Format):
    group: int = 64
    method: str = "optimal"
    name: str = ""

    def __post_init__(self) -> None:
        if isinstance(self.group, bool) or not isinstance(self.group, int) or self.group < 1:
            raise ValueError(f"TernaryFormat group must be a positive int, got {self.group!r}")
        if self.method not in METHODS:
            raise ValueError(f"unknown ternary method {self.method!r}; valid: {', '.join(METHODS)}")
        if not self.name:
            object.__setattr__(self, "name", f"ternary-g{self.group}" + ("" if self.method == "optimal" else "-thr"))

    def _quantize(self, x, rounding, saturate, rand_bits, generator, out):
        if rounding != "nearest":
            raise ValueError(f"ternary formats support rounding='nearest' only, got {rounding!r}")
        flat = x.reshape(x.shape[0], -1) if x.dim() >= 2 else x.reshape(1, -1)
        g, inv = group_view(flat, -1, self.group)
        count = group_view(torch.ones_like(flat[:1]), -1, self.group)[0].sum(dim=-1, keepdim=True)
        inf = torch.isinf(g)
        alpha, t = ternarize_groups(torch.where(inf, torch.zeros_like(g), g), self.method, count)
        y = (alpha * t).to(x.dtype)
        sat = torch.where(alpha > 0, alpha.to(x.dtype).expand_as(y), torch.full_like(y, float("inf")))
        y = torch.where(inf, torch.copysign(sat, g), y)
        y = torch.where(torch.isnan(g).any(dim=-1, keepdim=True), torch.full_like(y, float("nan")), y)
        return inv(y).reshape(x.shape)

    @functools.cached_property
    def info(self) -> FormatInfo:
        return FormatInfo(self.name, 2, block=(self.group,), axis=-1, scale_format="fp32", scale_bits=32)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "bits": 2, "bias": None, "max": None, "min_normal": None, "min_subnormal": None,
                "special": "none", "notes": f"alpha*{{-1,0,1}}, one scale per {self.group} weights ({self.method})"}
