"""OCP Microscaling (MX v1.0) block formats: blocks of 32 elements along one axis share an E8M0 scale.

X = 2^(floor(log2 amax) - emax_elem), clamped to E8M0's 2^-127..2^127; each element is quantized as x / X in the
element format with saturation (OCP MX v1.0 §6.3), then multiplied back by X. A block of zeros gets X = 2^-127.

``scale_rounding`` chooses how the E8M0 exponent is taken from amax (docs/accelerator-recipes.md; exact, from amax's bits):
  floor  OCP MX v1.0:           E = floor(log2 amax) - emax_elem                      (the default)
  ceil                          E = ceil(log2 amax) - emax_elem
  rceil  NVIDIA (cuBLAS/TE):    E = ceil(log2(amax / max_elem))   (amax / 2^E <= max_elem: nothing saturates)
  even   torchao "EVEN":        amax first rounded to the element's mantissa width (a tie rounds up, which is
                                also ties-to-even there), then floor: E = floor(log2 RN_man(amax)) - emax_elem
For MXINT8 max_elem = 127/64 and its mantissa width is 6 bits.
Our choices where the spec leaves room: the axis length need not be a multiple of 32 (the last block is padded
with zeros, which do not change its amax); NaN and ±Inf elements pass through unchanged and do not enter amax.
MXINT8 elements are 8-bit two's complement with an implicit scale of 2^-6 (emax 0), clamped symmetrically to ±127.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any

import torch

from . import layout
from .base import Format, FormatInfo
from .dfp import floor_log2
from .float import FloatFormat
from .round_reference import pow2
from .integer import round_on_grid
from .scaled import amax, group_view

E8M0_EMIN, E8M0_EMAX = -127, 127
SCALE_ROUNDINGS = ("floor", "ceil", "rceil", "even")


@dataclasses.dataclass(frozen=True)
class MXFormat(Format):
    """An MX format: ``element`` is a FloatFormat or "int8"; ``block`` elements along ``axis`` share a scale."""

    element: FloatFormat | str
    block: int = 32
    axis: int = -1
    name: str = ""
    scale_rounding: str = "floor"

    def __post_init__(self) -> None:
        if self.scale_rounding not in SCALE_ROUNDINGS:
            raise ValueError(f"unknown MX scale_rounding {self.scale_rounding!r}; valid: {', '.join(SCALE_ROUNDINGS)}")
        if isinstance(self.element, dict):
            object.__setattr__(self, "element", FloatFormat(**{k: v for k, v in self.element.items() if k != "kind"}))
        if not (isinstance(self.element, FloatFormat) or self.element == "int8"):
            raise ValueError(f"MXFormat element must be a FloatFormat or 'int8', got {self.element!r}")
        if isinstance(self.block, bool) or not isinstance(self.block, int) or self.block < 1:
            raise ValueError(f"MXFormat block must be a positive int, got {self.block!r}")
        if not self.name:
            el = "int8" if self.element == "int8" else self.element.name
            suffix = "" if self.scale_rounding == "floor" else f"-{self.scale_rounding}"
            object.__setattr__(self, "name", f"mx{el}-b{self.block}{suffix}")

    @property
    def emax_elem(self) -> int:
        return 0 if self.element == "int8" else self.element.emax

    @property
    def max_elem(self) -> float:
        return 127 / 64 if self.element == "int8" else self.element.max

    def shared_exponent(self, g: torch.Tensor) -> torch.Tensor:
        """E8M0 exponent per block of a ``group_view`` tensor (``scale_rounding``, module docstring), clamped."""
        a = amax(g.double())
        fa = floor_log2(a)
        mode = self.scale_rounding
        if mode == "floor":
            e = fa
        else:
            sig = a / pow2(fa, torch.float64)  # amax's significand in [1, 2), exact
            if mode == "ceil":
                e = fa + (sig > 1).to(torch.int64)
            elif mode == "rceil":  # ceil(log2(amax / max_elem)) = fa - emax + (sig > max_elem / 2^emax)
                m = self.max_elem / 2.0**self.emax_elem
                e = fa + (sig > m).to(torch.int64)
            else:  # even: round sig to the element's mantissa width (half up), carry into the exponent
                man = 6 if self.element == "int8" else self.element.man
                e = fa + (torch.floor(sig * 2.0**man + 0.5) >= 2.0 ** (man + 1)).to(torch.int64)
        e = e - self.emax_elem
        e = torch.where(a > 0, e, torch.full_like(e, E8M0_EMIN))
        return torch.clamp(e, E8M0_EMIN, E8M0_EMAX)

    def rounds_in_place(self, x: torch.Tensor, axis: int, rounding: str) -> bool:
        """Whether blocks along ``axis`` of x are rounded in x's own layout, without a transposed or padded copy in
        or out, when the compiled kernels serve it: the last axis of a contiguous x (``mx_compiled.quantize``) or
        another one (``mx_compiled.quantize_along``)."""
        from . import mx_compiled

        return layout.in_place_ok(x, axis, self.block) and mx_compiled.supported(self, rounding)

    def _quantize(self, x, rounding, saturate, rand_bits, generator, out):
        from . import dispatch, mx_compiled

        if dispatch.mx_fast_ok(x, self):  # compiled twin of the code below (same bits)
            return dispatch.mx_dispatch(x, self, rounding, rand_bits, generator, out)
        if mx_compiled.along_ok(x, self, self.axis, rounding):  # blocks along another axis, rounded in place
            return mx_compiled.quantize_along(x, self, self.axis, rounding, rand_bits, generator, out)
        if x.dim() >= 1 and isinstance(self.element, FloatFormat) and dispatch.use_compiled(x):
            # blocks along another axis, or a length that is not a multiple of the block: the same kernel on the
            # layout the eager code below builds (axis moved last, zero-padded), so every element keeps its
            # position and its random bits
            ax = self.axis % x.dim()
            xt = layout.axis_last(x, ax)  # the strided copies as compiled transpositions where they can be
            n = xt.shape[-1]
            if 0 < n < self.block and self.block % n == 0 and rounding == "nearest":
                # lines shorter than a block (attention's head dim 16 under blocks of 32): each line is one block
                # whose zero padding changes neither its amax nor, to nearest, any element's rounding, so it is
                # rounded as a block of its own length, without the padded copy (stochastic rounding draws its
                # bits at the padded positions: it keeps the padded layout below)
                y = dispatch.mx_dispatch(xt, dataclasses.replace(self, axis=-1, block=n), rounding, rand_bits,
                                         generator, None)
                return layout.contiguous(y.movedim(-1, ax))
            if n % self.block:
                xt = torch.nn.functional.pad(xt, (0, (-n) % self.block))
            y = dispatch.mx_dispatch(xt, _along_last(self), rounding, rand_bits, generator, None)
            return layout.contiguous(y[..., :n].movedim(-1, ax))
        g, inv = group_view(x, self.axis, self.block)
        scale = pow2(self.shared_exponent(g), torch.float64)
        v = g.double() / scale  # exact: division by a power of two, float64 has the range
        if self.element == "int8":
            e = round_on_grid(v, 2.0**-6, -127, 127, rounding, rand_bits, generator)
        else:
            e = self.element.quantize(v, rounding, saturate=True, rand_bits=rand_bits, generator=generator)
        y = (e * scale).to(x.dtype)
        y = torch.where(torch.isfinite(g), y, g)
        return inv(y)

    @functools.cached_property
    def info(self) -> FormatInfo:
        int8 = self.element == "int8"
        return FormatInfo(self.name, 8 if int8 else self.element.total_bits,
                          specials="none" if int8 else self.element.special, block=(self.block,), axis=self.axis,
                          oriented=True, scale_format="e8m0", scale_bits=8)

    def describe(self) -> dict[str, Any]:
        el = {"name": "int8", "max": 127 / 64} if self.element == "int8" else self.element.describe()
        bits = 8 if self.element == "int8" else self.element.total_bits
        return {"name": self.name, "bits": bits, "bias": None if self.element == "int8" else self.element.bias,
                "max": el["max"] * 2.0**E8M0_EMAX, "min_normal": None, "min_subnormal": None, "special": "none",
                "notes": f"{bits}-bit {el['name']} elements, E8M0 scale ({self.scale_rounding}) per {self.block} "
                         f"along axis {self.axis} ({bits + 8 / self.block:.3g} bits/element)"}


@functools.cache
def _along_last(fmt: MXFormat) -> MXFormat:
    return dataclasses.replace(fmt, axis=-1)


@dataclasses.dataclass(frozen=True)
class E8M0Format(Format):
    """OCP E8M0 scale format: unsigned powers of two 2^-127..2^127, 0xFF = NaN, no zero (ml_dtypes float8_e8m0fnu).

    Matches ml_dtypes: x <= 0, NaN, Inf and overflow give NaN (saturate=True: overflow and +Inf give 2^127);
    values below 2^-127 give 2^-127. Nearest rounds in the linear domain, ties to even (3 -> 4). One deviation:
    ml_dtypes rounds every x in (2^-127, 1.5·2^-127) up to 2^-126; we round it to the nearer 2^-127.
    """

    name: str = "e8m0"

    def _quantize(self, x, rounding, saturate, rand_bits, generator, out):
        from .scaled import round_to_int

        xd = x.double()
        pos = torch.where(xd > 0, xd, torch.ones_like(xd))
        e = floor_log2(pos)
        frac = pos / pow2(e, torch.float64)  # in [1, 2), exact
        if rounding == "nearest":  # m = 0: the tie 1.5 goes to the even significand 2
            up = (frac >= 1.5).to(torch.int64)
        else:
            up = round_to_int(frac - 1, rounding, rand_bits, generator).to(torch.int64)
        e = torch.clamp(e + up, min=E8M0_EMIN)
        y = pow2(torch.clamp(e, max=E8M0_EMAX), torch.float64)
        over = (e > E8M0_EMAX) | torch.isinf(xd)
        y = torch.where(over, torch.full_like(y, 2.0**127 if saturate else float("nan")), y)
        y = torch.where(xd > 0, y, torch.full_like(y, float("nan")))
        return y.to(x.dtype)

    @functools.cached_property
    def info(self) -> FormatInfo:
        return FormatInfo(self.name, 8, 2.0**127, 2.0**-127, None, "fn")

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "bits": 8, "bias": 127, "max": 2.0**127, "min_normal": 2.0**-127,
                "min_subnormal": None, "special": "fn", "notes": "unsigned power of two (MX scale), 0xFF = NaN"}

