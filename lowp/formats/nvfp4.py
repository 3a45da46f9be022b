"""NVFP4 (NVIDIA Blackwell): E2M1 elements, an E4M3 scale per 16-element block and one FP32 scale per tensor.

Two public orders of operations, reproduced bit for bit (docs/accelerator-recipes.md); everything in float32, fl32(·) one rounding,
A = the tensor's amax, a_b = the block's amax:

``order="te"`` (Transformer Engine ``NVFP4QuantizerRef._quantize_blockwise_reference``):
    s_enc = min(fl32(448·6 / A), FLT_MAX)   (1 if that is 0)         s_dec = fl32(1 / s_enc)
    d_b   = e4m3_RNE(clamp(fl32(a_b · fl32(s_enc · fl32(1/6))), ≤ 448))   (no lower clamp: tiny blocks get 0)
    e_b   = min(fl32(1 / fl32(d_b · s_dec)), FLT_MAX)
    q     = e2m1_RNE(clamp(fl32(x · e_b), ±6))
``order="torchao"`` (torchao ``nvfp4_quantize`` with a per-tensor scale):
    s_dec = fl32(A / (448·6))                 d_b = e4m3_RNE(clamp(fl32(fl32(a_b / 6) / s_dec), 2^-6, 448))
    q     = e2m1_RNE(clamp(fl32(x / fl32(s_dec · d_b)), ±6))
Both hand on the value fl32((q·d_b)·s_dec) (q·d_b is exact): a GEMM of these values in FP32 agrees with the
hardware's block-scaled GEMM (Σ_blocks d_x·d_w·Σ q_x·q_w, times the two per-tensor factors) to FP32 rounding, not
bit for bit (the order of the FP32 sums and scalings differs).

``rounding`` applies to the E2M1 step only (e.g. "stochastic" with a ``generator`` for gradients, as TE's NVFP4
recipe does); the scales are always rounded to nearest. ``block`` 16 (1×16 along ``axis``) or (16, 16) (2-D tiles
over the last two dims: one amax per 256 weights, TE's weight quantization). Our choices where the references
leave room (documented deviations): NaN and ±Inf elements pass through and do not enter any amax (in
TE/torchao a NaN poisons its block, and an Inf makes the tensor scale degenerate); a tensor whose torchao s_dec is
0 (A = 0, or A <= 2688·2^-150) is returned as ±0 (torchao divides 0 by 0 there), and a zero element stays 0
where fl32(s_dec·d_b) underflows to 0 (torchao: 0/0 = NaN; a nonzero element there gets ±6 in both); partial
blocks are zero-padded (``tiles.py``); input is rounded to float32 first.
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

ORDERS = ("te", "torchao")
FLT_MAX = torch.finfo(torch.float32).max
E4M3 = FloatFormat(4, 3, special="fn", name="e4m3")
E2M1 = FloatFormat(2, 1, special="none", name="e2m1")
E4M3_TINY = 2.0**-6  # smallest normal E4M3 (torchao's E4M3_EPS)


def _f32(v) -> torch.Tensor:
    return torch.tensor(v, dtype=torch.float32)


@dataclasses.dataclass(frozen=True)
class NVFP4Format(Format):
    """NVFP4 with TE's or torchao's order of operations (module docstring)."""

    order: str = "te"
    block: Block = 16
    axis: int = -1
    name: str = ""

    def __post_init__(self) -> None:
        if self.order not in ORDERS:
            raise ValueError(f"unknown NVFP4 order {self.order!r}; valid: {', '.join(ORDERS)}")
        object.__setattr__(self, "block", check_block(self.block, "NVFP4Format"))
        if self.block is None:
            raise ValueError("NVFP4Format needs a block (16 or (16, 16)), got None")
        if not self.name:
            base = "nvfp4" if self.order == "te" else "nvfp4-torchao"
            object.__setattr__(self, "name", base + ("" if self.block == 16 else f"-{block_label(self.block)}"))

    def encode(self, x: torch.Tensor, rounding: str = "nearest", rand_bits: int = 32,
               generator: torch.Generator | None = None):
        """(q, d_b, s_dec, inverse): E2M1 codes as float32 values shaped like ``tile_view(x)``, E4M3 block scales
        (..., nblocks, 1), the per-tensor decode scale (0-d) and the map back to x's shape."""
        q, d_b, s_dec, _, inv, _ = self._encode(x, rounding, rand_bits, generator)
        return q, d_b, s_dec, inv

    def _encode(self, x, rounding, rand_bits, generator):
        g, inv = tile_view(x.float(), self.axis, self.block)
        a_b, finite = block_amax(g)
        # = the tensor's finite amax
        big_a = a_b.amax() if a_b.numel() else torch.zeros((), dtype=torch.float32, device=x.device)
        if self.order == "te":
            s_enc = torch.clamp(_f32(2688.0) / big_a, max=FLT_MAX)
            s_enc = torch.where(s_enc == 0, torch.ones_like(s_enc), s_enc)
            s_dec = torch.reciprocal(s_enc)
            d = torch.clamp(a_b * (s_enc * torch.reciprocal(_f32(6.0))), max=FLT_MAX)
            d_b = E4M3.quantize(torch.clamp(d, max=448.0))
            e_b = torch.clamp(torch.reciprocal(d_b * s_dec), max=FLT_MAX)
            v = g * e_b
        else:
            s_dec = big_a / 2688.0
            d_b = E4M3.quantize(torch.clamp((a_b / 6.0) / s_dec, min=E4M3_TINY, max=448.0))
            v = g / (s_dec * d_b)
            v = torch.where(g == 0, g, v)  # fl32(s_dec·d_b) can underflow to 0: keep 0 / 0 at 0 (torchao: NaN)
        q = E2M1.quantize(torch.clamp(v, -6.0, 6.0), rounding, rand_bits=rand_bits, generator=generator)
        return q, d_b, s_dec, g, inv, finite

    def rounds_in_place(self, x: torch.Tensor, axis: int, rounding: str) -> bool:
        """Whether x is rounded in its own layout, without a transposed or padded copy in or out, when the compiled
        kernels serve it: 1x16 blocks along the last axis of a contiguous x, or another one
        (``nvfp4_compiled.fused_along``); square tiles of a contiguous x rounded to nearest (a square tile of x and
        of its transpose cover the same elements, and the tensor scale is the same, so a transposed x may be
        rounded as its contiguous base)."""
        from . import layout

        if isinstance(self.block, tuple):
            return (self.block[0] == self.block[1] and rounding == "nearest" and x.dim() >= 2 and x.numel() > 0
                    and x.is_contiguous() and x.dtype == torch.float32)
        return layout.in_place_ok(x, axis, self.block) and rounding in ("nearest", "stochastic")

    def _quantize(self, x, rounding, saturate, rand_bits, generator, out):
        from . import nvfp4_compiled

        if nvfp4_compiled.usable(x):  # the compiled twin of the code below (same bits)
            return nvfp4_compiled.quantize(x, self, rounding, rand_bits, generator, out)
        q, d_b, s_dec, g, inv, finite = self._encode(x, rounding, rand_bits, generator)
        y = (q * d_b) * s_dec
        if self.order == "torchao" and float(s_dec) == 0.0:
            y = g * 0.0
        if not finite:
            y = torch.where(torch.isfinite(g), y, g)
        return inv(y).to(x.dtype)

    @functools.cached_property
    def info(self) -> FormatInfo:
        block = self.block if isinstance(self.block, tuple) else (self.block,)
        return FormatInfo(self.name, 4, block=block, axis=self.axis, oriented=True, scale_format="e4m3+fp32",
                          scale_bits=8)

    def describe(self) -> dict[str, Any]:
        gran = (f"{block_label(self.block)} tile (last two dims)" if isinstance(self.block, tuple)
                else f"1x{self.block} block along axis {self.axis}")
        return {"name": self.name, "bits": 4, "bias": 1, "max": 6.0 * 448.0, "min_normal": None,
                "min_subnormal": None, "special": "none",
                "notes": f"E2M1 elements, E4M3 scale per {gran}, FP32 per-tensor scale ({self.order} order; "
                         f"max is in units of the tensor scale)"}
