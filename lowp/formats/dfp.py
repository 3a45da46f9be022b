"""Dynamic fixed point (Das et al. 2018; Mellempudi et al. 2017): ``bits``-bit integers sharing one power-of-two
exponent per tensor (block=None) or per block of ``block`` elements along ``axis``.

The shared exponent is chosen from max|x| so that nothing overflows: with e = floor(log2 amax),
the step is 2^(e - (bits - 2)), so amax / step < 2^(bits-1); an element that rounds up to 2^(bits-1) saturates to
2^(bits-1) - 1. NaN stays NaN, ±Inf saturates, non-finite values do not enter amax.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any

import torch

from .base import Format, FormatInfo
from .round_reference import pow2
from .integer import _check_int, round_on_grid
from .scaled import amax, group_view


def floor_log2(a: torch.Tensor) -> torch.Tensor:
    """Exact floor(log2 a) for positive finite a (int64); 0 for a == 0."""
    _, e = torch.frexp(a)
    return torch.where(a > 0, e.to(torch.int64) - 1, torch.zeros_like(e, dtype=torch.int64))


@dataclasses.dataclass(frozen=True)
class DFPFormat(Format):
    bits: int
    block: int | None = None
    axis: int = -1
    name: str = ""

    def __post_init__(self) -> None:
        _check_int("DFPFormat bits", self.bits, 2, 32)
        if self.block is not None:
            _check_int("DFPFormat block", self.block, 1, 1 << 30)
        if not self.name:
            object.__setattr__(self, "name", f"dfp{self.bits}" + ("" if self.block is None else f"-b{self.block}"))

    def shared_exponent(self, x: torch.Tensor) -> torch.Tensor:
        """Exponent of the step (int64), shaped (..., nblocks, 1) over ``group_view`` (per tensor: a 0-d tensor)."""
        g = x.reshape(1, 1, -1) if self.block is None else group_view(x, self.axis, self.block)[0]
        return floor_log2(amax(g.double())) - (self.bits - 2)

    def _quantize(self, x, rounding, saturate, rand_bits, generator, out):
        if self.block is None:
            g, inv = x.reshape(1, 1, -1), lambda y: y.reshape(x.shape)
        else:
            g, inv = group_view(x, self.axis, self.block)
        step = pow2(self.shared_exponent(x), torch.float64)  # exact powers of two
        lim = 2 ** (self.bits - 1) - 1
        return inv(round_on_grid(g, step, -lim, lim, rounding, rand_bits, generator))

    @functools.cached_property
    def info(self) -> FormatInfo:
        blocked = self.block is not None
        return FormatInfo(self.name, self.bits, block=(self.block,) if blocked else None,
                          axis=self.axis if blocked else None, oriented=blocked, scale_format="pow2", scale_bits=8)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "bits": self.bits, "bias": None, "max": None, "min_normal": None,
                "min_subnormal": None, "special": "none",
                "notes": "shared power-of-two exponent per " + ("tensor" if self.block is None else
                                                                  f"block of {self.block}") +
                         f", integers in ±{2 ** (self.bits - 1) - 1}"}
