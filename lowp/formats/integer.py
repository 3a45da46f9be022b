"""Integer and fixed-point formats.

IntFormat(bits): symmetric integers q in [-(2^(b-1)-1), 2^(b-1)-1] times a float32 scale s = fl32(amax / qmax)
(s = 1 where amax = 0, at least 2^-149, the smallest float32, where amax/qmax underflows, and at most the largest
float32 / qmax where amax exceeds the float32 range (a float64 input): larger values then saturate to ±qmax·s), with
amax over the whole tensor (axis=None) or reduced over ``axis`` (per channel: for a weight (out, in), axis=1 gives
one scale per output row). The division x / s is done in float64 (exact
operands, one rounding of the quotient is avoided since both are float32 values: the float64 quotient is then
rounded to an integer), and the result q·s is rounded once to the input dtype.

FixedFormat(il, fl) (Gupta et al. 2015, <IL,FL>): values k·2^-FL, k in [-2^(IL+FL-1), 2^(IL+FL-1) - 1], so the range
is [-2^(IL-1), 2^(IL-1) - 2^-FL] (IL counts the sign bit); always saturating.

Integer grids have no NaN or Inf: a NaN input stays NaN; ±Inf saturates to ±max.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import torch

from .base import Format, FormatInfo
from .scaled import amax, group_view, round_to_int


def _check_int(name: str, v: Any, lo: int, hi: int) -> None:
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise ValueError(f"{name} must be an int in {lo}..{hi}, got {v!r}")


def round_on_grid(x, step_exp_or_scale, qmin, qmax, rounding, rand_bits, generator):
    """Round x / scale to an integer in [qmin, qmax] and return q * scale in x's dtype (NaN stays NaN)."""
    xd = x.double()
    v = xd / step_exp_or_scale
    q = round_to_int(v, rounding, rand_bits, generator)
    q = torch.clamp(q, qmin, qmax)
    y = (q * step_exp_or_scale).to(x.dtype)
    return torch.where(torch.isnan(x), x, y)


@dataclasses.dataclass(frozen=True)
class IntFormat(Format):
    """Symmetric ``bits``-bit integers with a scale from amax (per tensor, or per slice along ``axis``)."""

    bits: int
    axis: int | None = None
    name: str = ""

    def __post_init__(self) -> None:
        _check_int("IntFormat bits", self.bits, 2, 32)
        if self.axis is not None:
            _check_int("IntFormat axis", self.axis, -64, 63)
        if not self.name:
            object.__setattr__(self, "name", f"int{self.bits}" + ("" if self.axis is None else f"@axis{self.axis}"))

    @property
    def qmax(self) -> int:
        return 2 ** (self.bits - 1) - 1

    def scale_for(self, x: torch.Tensor) -> torch.Tensor:
        """float32 scale max(min(amax, float32 max)/qmax, 2^-149) (1 where amax is 0), broadcastable against x."""
        if self.axis is None:
            a = amax(x.reshape(1, -1)).reshape(())
        else:
            g, inv = group_view(x, self.axis, None)
            a = inv(amax(g).expand_as(g))
        if a.dtype == torch.float64:  # an amax beyond the float32 range: the largest float32 scale
            a = a.clamp(max=torch.finfo(torch.float32).max)
        a = a.float()
        s = torch.clamp(a / self.qmax, min=2.0**-149)
        return torch.where(a > 0, s, torch.ones_like(s))  # float32 scale

    def quantize_with_scale(self, x, scale, rounding="nearest", rand_bits=32, generator=None):
        """Quantize with a given (broadcastable) scale, e.g. one found by calibration."""
        scale = torch.as_tensor(scale, dtype=torch.float64)
        return round_on_grid(x, scale, -self.qmax, self.qmax, rounding, rand_bits, generator)

    def _quantize(self, x, rounding, saturate, rand_bits, generator, out):
        from . import dispatch

        if self.axis is None and dispatch.use_compiled(x):  # compiled twin of the code below (same bits)
            return dispatch.int_dispatch(x, self, rounding, rand_bits, generator, out)
        return self.quantize_with_scale(x, self.scale_for(x).double(), rounding, rand_bits, generator)

    @functools.cached_property
    def info(self) -> FormatInfo:
        return FormatInfo(self.name, self.bits, axis=self.axis, oriented=True, scale_format="fp32", scale_bits=32)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "bits": self.bits, "bias": None, "max": float(self.qmax), "min_normal": None,
                "min_subnormal": 1.0, "special": "none",
                "notes": "symmetric integer x scale (amax/qmax, per tensor" + (
                    ")" if self.axis is None else f", per slice of axis {self.axis})")}


@dataclasses.dataclass(frozen=True)
class FixedFormat(Format):
    """Gupta's <IL, FL> fixed point: IL integer bits including the sign, FL fractional bits; saturating."""

    il: int
    fl: int
    name: str = ""

    def __post_init__(self) -> None:
        _check_int("FixedFormat il", self.il, 1, 32)
        _check_int("FixedFormat fl", self.fl, -32, 64)
        if not 2 <= self.il + self.fl <= 32:
            raise ValueError(f"FixedFormat word length il+fl must be in 2..32, got {self.il}+{self.fl}")
        if not self.name:
            object.__setattr__(self, "name", f"fixed<{self.il},{self.fl}>")

    @property
    def max(self) -> float:
        return math.ldexp(2 ** (self.il + self.fl - 1) - 1, -self.fl)

    def _quantize(self, x, rounding, saturate, rand_bits, generator, out):
        step = math.ldexp(1.0, -self.fl)
        n = self.il + self.fl - 1
        return round_on_grid(x, step, -(2**n), 2**n - 1, rounding, rand_bits, generator)

    @functools.cached_property
    def info(self) -> FormatInfo:
        return FormatInfo(self.name, self.il + self.fl, self.max, min_subnormal=math.ldexp(1.0, -self.fl))

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "bits": self.il + self.fl, "bias": None, "max": self.max, "min_normal": None,
                "min_subnormal": math.ldexp(1.0, -self.fl), "special": "none",
                "notes": f"range [-2^{self.il - 1}, 2^{self.il - 1} - 2^-{self.fl}], saturating"}
