"""FP8 with an FP32 (or power-of-two) scale per row, per 1-D block or per 2-D tile (docs/accelerator-recipes.md).

Two public recipes define the scale; both are offered and named by ``style`` (all arithmetic in float32 unless
said; ``amax`` is the block's max |finite value|, ``max`` the element format's largest value, 448 for E4M3):

  torchao  (float8 rowwise, ``amax_to_scale``):  s = fl32(max / max(amax, 1e-12)) with the division in float64;
           the stored value is fl32(q / s).
  te       (Transformer Engine Float8BlockScaling / DeepSeek-V3 1×128 and 128×128 blocks,
           ``scale_from_amax_tensor``): s = fl32(max / amax) (Inf → FLT_MAX), s = 1 where amax = 0;
           the stored value is fl32(q · fl32(1 / s)) (TE dequantizes with ``scale_inv``).
  pow2=True rounds s down to a power of two, exactly (2^floor(log2 s), from s's bits; torchao computes
           floor(log2 s) in float32 arithmetic, which can differ for s within a few ulps below a power of two).
Codes: q = RN_elem(clamp(fl32(x · s), ±max)) (saturating cast, ties to even; ``rounding`` selects another mode).

Granularity ``block``: n (1×n blocks along ``axis``), None (the whole axis: per row along the reduction dim) or
(r, c) (2-D tiles over the last two dims); see ``tiles.py`` (partial blocks are zero-padded). Our choices where the
references leave room: NaN and ±Inf elements pass through unchanged and do not enter amax (in the references a
NaN poisons its block's scale); input is rounded to float32 first (the references compute in float32).
The result has the input's dtype, like every lowp format: for bfloat16/float16 input the values (which need up
to 24 bits with an FP32 scale) are rounded once more to that dtype; pass float32 to keep them exactly.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any

import torch

from .base import Format, FormatInfo
from .float import FloatFormat
from .tiles import Block, block_amax, block_label, check_block, tile_view

STYLES = ("torchao", "te")
FLT_MAX = torch.finfo(torch.float32).max
TORCHAO_EPS = 1e-12


def fp8_block_scale(a: torch.Tensor, fmt_max: float, style: str, pow2_scale: bool) -> torch.Tensor:
    """Encode scale s (float32) from block amax ``a`` (float32), per ``style`` (module docstring)."""
    if style == "torchao":
        s = (fmt_max / torch.clamp(a.double(), min=TORCHAO_EPS)).float()
    else:
        s = (fmt_max / a.double()).float()  # fl32 of the float64 quotient = the correctly rounded float32 quotient
        s = torch.where(torch.isinf(s), torch.full_like(s, FLT_MAX), s)
    if pow2_scale:  # 2^floor(log2 s): the significand bits of s in float64 (normal there) cleared, exactly
        s = (s.double().view(torch.int64) & 0x7FF0000000000000).view(torch.float64).float()
    if style == "te":
        s = torch.where(a == 0, torch.ones_like(s), s)
    return s


@dataclasses.dataclass(frozen=True)
class BlockScaledFormat(Format):
    """``element`` values with one float32 scale per ``block`` (module docstring)."""

    element: FloatFormat
    block: Block = 128
    axis: int = -1
    pow2: bool = False
    style: str = "te"
    name: str = ""

    def __post_init__(self) -> None:
        if isinstance(self.element, dict):
            object.__setattr__(self, "element", FloatFormat(**{k: v for k, v in self.element.items() if k != "kind"}))
        if not isinstance(self.element, FloatFormat):
            raise ValueError(f"BlockScaledFormat element must be a FloatFormat, got {self.element!r}")
        object.__setattr__(self, "block", check_block(self.block, "BlockScaledFormat"))
        if self.style not in STYLES:
            raise ValueError(f"unknown BlockScaledFormat style {self.style!r}; valid: {', '.join(STYLES)}")
        if not self.name:
            object.__setattr__(self, "name", f"{self.element.name}-{block_label(self.block)}"
                                             f"{'-pow2' if self.pow2 else ''}-{self.style}")

    def scales(self, x: torch.Tensor) -> torch.Tensor:
        """The encode scales s, shaped (..., nblocks, 1) over ``tile_view(x)``."""
        g, _ = tile_view(x.float(), self.axis, self.block)
        return fp8_block_scale(block_amax(g)[0], self.element.max, self.style, self.pow2)

    def rounds_in_place(self, x: torch.Tensor, axis: int, rounding: str) -> bool:
        """Whether x is rounded in its own layout, without a moved, padded or tile-view copy in or out, when the
        compiled kernels serve it (``blockwise_compiled``): a contiguous float32 x rounded to nearest, blocks or
        rows along ``axis``, or square tiles (a square tile of x and of its transpose cover the same elements, so
        a transposed x may be rounded as its contiguous base)."""
        from . import blockwise_compiled

        tiles = isinstance(self.block, tuple)
        return (x.dim() >= (2 if tiles else 1) and x.numel() > 0 and x.is_contiguous() and x.dtype == torch.float32
                and (not tiles or self.block[0] == self.block[1]) and blockwise_compiled.supported(self, rounding))

    def _quantize(self, x, rounding, saturate, rand_bits, generator, out):
        from . import blockwise_compiled

        if blockwise_compiled.usable(x, self, rounding):  # the compiled twin of the code below (same bits)
            return blockwise_compiled.quantize(x, self, out)
        g, inv = tile_view(x.float(), self.axis, self.block)
        a, finite = block_amax(g)
        s = fp8_block_scale(a, self.element.max, self.style, self.pow2)
        v = torch.clamp(g * s, -self.element.max, self.element.max)
        q = self.element.quantize(v, rounding, saturate=True, rand_bits=rand_bits, generator=generator)
        y = q / s if self.style == "torchao" else q * torch.reciprocal(s)
        if not finite:
            y = torch.where(torch.isfinite(g), y, g)
        return inv(y).to(x.dtype)

    @functools.cached_property
    def info(self) -> FormatInfo:
        block = None if self.block is None else (self.block if isinstance(self.block, tuple) else (self.block,))
        return FormatInfo(self.name, self.element.total_bits, specials=self.element.special, block=block,
                          axis=self.axis, oriented=True, scale_format="pow2" if self.pow2 else "fp32",
                          scale_bits=32)

    def describe(self) -> dict[str, Any]:
        el = self.element
        if self.block is None:
            gran = f"per row along axis {self.axis}"
        elif isinstance(self.block, tuple):
            gran = f"per {block_label(self.block)} tile (last two dims)"
        else:
            gran = f"per 1x{self.block} block along axis {self.axis}"
        return {"name": self.name, "bits": el.total_bits, "bias": el.bias, "max": None, "min_normal": None,
                "min_subnormal": None, "special": el.special,
                "notes": f"{el.name} elements, {'power-of-two' if self.pow2 else 'FP32'} scale {gran} "
                         f"({self.style} order)"}
