"""Compiled MX kernels for float elements with the OCP ``floor`` scale, round to nearest or stochastic: the bits of
``block.MXFormat`` (the eager reference) in two passes over the tensor, for rows of one block each (``dispatch.py``
lays the tensor out as the reference's ``group_view``), or, for blocks along another axis of a contiguous tensor,
where they lie (``quantize_along``: x viewed as ``layout.blocks``, no transposed copy):

  ``binade`` 2^floor(log2 a_b) per block, a_b its amax over finite elements (the reference's): the max of the
             elements' exponent fields, non-finite ones as 0 (``block_binade_finite``)               one read
  ``scales`` E = clamp(floor(log2 a_b) - emax, -127, 127) (-127 for a zero block) as 2^-E and 2^E per block
  ``round``  v = g·2^-E in float32;
             r = Q(v) on the element grid (``grid_kernels``, the element's constants baked in), saturated at ±max
             (flushed below the smallest normal for formats without subnormals, -0 -> +0 for fnuz);
             out = r·2^E, non-finite g passed through                                        one read, one write

Exactness of the float32 scaling, where the reference divides in float64: g·2^-E is exact unless it falls below
2^-126; then |g/2^E| < 2^-126 lies below a quarter of the element's smallest quantum 2^(emin - m) (we require
emin - m >= -125), so the exact and the float32 product both round to ±0 to nearest, and both have a stochastic
remainder word floor(f·2^32) = 0. r·2^E is exact in float64, so one float32 rounding of it (r·2^E in float32) is the
reference's ``(e·scale).to(float32)``. Directed roundings (whose decision sees any nonzero remainder) and the other
scale roundings keep the general kernel (``round_compiled.mx_round_into``).
One graph per (element, rounding) and block length, shapes dynamic. Below ``FUSED_MAX`` elements the three run as
one graph (``fused``: one compiled call instead of three, which is most of the cost at the sizes of emulated
training; at 2^24 elements the separate passes are faster). The binade pass is an integer fold with no NaN to
propagate (``grid_kernels.finite_row_max``): a float amax over each block was the costliest part of the kernel.
"""
from __future__ import annotations

import torch

from ..rounding import draw_key
from . import compiling, dispatch, grid_kernels, layout

I32, F32 = torch.int32, torch.float32
FUSED_MAX = 1 << 20  # elements below which ``fused`` serves (measured at 2^17: 144 vs 432 µs; 2^24: 20.0 vs 17.5 ms)


def block_amax_finite(g):
    """(a_b, A) with non-finite elements counted as 0 (the reference's amax), on the bit patterns
    (``grid_kernels.finite_row_max``)."""
    a_b = grid_kernels.finite_row_max(g, 0x7FFFFFFF)
    return a_b, a_b.amax()


def block_binade_finite(g):
    """2^floor(log2 a_b) per row of g (keepdim), a_b the amax over the row's finite elements (0 where that is 0 or
    subnormal): the max of the elements' exponent fields, non-finite ones counted as 0 (a larger exponent field is a
    larger binade, so the max field is the amax's), all ``scales`` needs of a_b."""
    return grid_kernels.finite_row_max(g, 0x7F800000)


def scales(a_b, *, emax: int = 8):
    """(2^-E, 2^E) per block: E = clamp(floor(log2 a_b) - emax, -127, 127), -127 for a zero block. 2^floor(log2 a_b)
    is a_b with its significand bits cleared (exact for a normal a_b; 0 for a zero or subnormal one, whose E is
    at most -127 - emax and clamps to -127 either way, emax >= 0), so 2^E = clamp(that · 2^-emax, 2^-127, 2^127) and
    2^-E = 1 / 2^E, both exact: a few float operations per block instead of the exponent's bit arithmetic."""
    p = (a_b.view(I32) & 0x7F800000).view(torch.float32)
    s_up = torch.clamp(p * 2.0**-emax, min=2.0**-127, max=2.0**127)
    return 1.0 / s_up, s_up


def round_into(out, g, s_down, s_up, rand_k=None, key=None, idx=None, *, mode: int = 0, man: int = 3,
               emin: int = -6, maxval: float = 448.0, minnorm: float = 2.0**-6, subnormals: bool = True,
               fnuz: bool = False):
    """out = MX(g) per block of g, with the blocks' 2^-E and 2^E broadcast over it (module docstring); ``idx``: the
    elements' random-bit indices (default their flat index in g). The element's constants are keywords (each
    compiled copy bakes its own: ``compiling.with_constants``)."""
    v = g * s_down
    r = grid_kernels.rn(v, man, emin) if mode == 0 else grid_kernels.sr(v, man, emin, rand_k, key, idx)
    y = grid_kernels.saturated(r, maxval=maxval, minnorm=minnorm, subnormals=subnormals, fnuz=fnuz) * s_up
    out.copy_(torch.where(torch.isfinite(g), y, g))


def fused(out, g, rand_k=None, key=None, *, emax: int = 8, **element):
    """The block binades (``block_binade_finite``), ``scales`` and ``round_into`` in one graph. The binade of every
    block is that of its amax over its finite elements: in a block without NaN/Inf that is its plain amax, so the
    scales are the reference's in every case. The rows' scales are materialised (``compiling.materialised``; else
    inductor recomputes them per element in scalar code)."""
    s_down, s_up = scales(block_binade_finite(g), emax=emax)
    round_into(out, g, compiling.materialised(s_down), compiling.materialised(s_up), rand_k, key, **element)


def fused_along(out, g, rand_k=None, key=None, idx=None, *, emax: int = 8, **element):
    """``fused`` for blocks along dim 2 of g = x.view(outer, n / block, block, inner), x contiguous: the blocks of
    ``x.movedim(axis, -1)`` rounded where they lie, out in x's layout. The amax of a block is a max over rows
    (vectorised along ``inner``, no horizontal reduction), and no transposed copy is made in or out. Stochastic
    rounding draws each element's bits at its flat index in the moved layout (``layout.moved_index``), as ``quantize``
    on that copy does: the same bits."""
    e = g.view(I32) & 0x7F800000  # the block binades (``block_binade_finite``), a max across rows
    e = torch.where(e == 0x7F800000, torch.zeros_like(e), e)
    s_down, s_up = scales(e.view(F32).amax(dim=2, keepdim=True), emax=emax)
    round_into(out, g, compiling.materialised(s_down), compiling.materialised(s_up), rand_k, key, idx, **element)


def supported(fmt, rounding: str) -> bool:
    """Whether the kernels here serve MXFormat ``fmt`` (module docstring)."""
    from .float import FloatFormat

    el = fmt.element
    return (rounding in ("nearest", "stochastic") and fmt.scale_rounding == "floor" and isinstance(el, FloatFormat)
            and el.man <= 22 and el.emin - el.man >= -125 and el.emax >= 0)


def _element(fmt, rounding: str) -> tuple[str, dict]:
    """(tag, keywords): the element's constants for ``round_into``, and a tag naming them."""
    tag, element = grid_kernels.element_constants(fmt.element)
    return f"{tag}_{rounding}", dict(mode=0 if rounding == "nearest" else 5, **element)


def _rand(rounding: str, rand_bits: int, generator, device) -> list:
    if rounding == "nearest":
        return []
    return [dispatch._on(dispatch._RANDK_T[rand_bits], device), dispatch._on(draw_key(generator), device)]


def along_layout_ok(x: torch.Tensor, fmt, axis: int, rounding: str) -> bool:
    """Whether x's layout suits ``quantize_along`` for blocks along ``axis``: not its last axis, ``layout.in_place_ok``,
    and a format and rounding these kernels serve."""
    return (x.dim() >= 2 and axis % x.dim() != x.dim() - 1 and layout.in_place_ok(x, axis, fmt.block)
            and supported(fmt, rounding))


def along_ok(x: torch.Tensor, fmt, axis: int, rounding: str) -> bool:
    """Whether ``quantize_along`` serves x: ``along_layout_ok`` and a compiled size (``dispatch.use_compiled``)."""
    return along_layout_ok(x, fmt, axis, rounding) and dispatch.use_compiled(x)


def quantize_along(x: torch.Tensor, fmt, axis: int, rounding: str, rand_bits: int, generator,
                   out: torch.Tensor | None = None) -> torch.Tensor:
    """MX quantization of x (``along_ok``) with blocks along ``axis``, in x's own layout (``fused_along``): the
    values and random bits of rounding ``x.movedim(axis, -1)`` along its last axis, moved back."""
    g = layout.blocks(x.detach(), axis, fmt.block)
    direct = out is not None and out.is_contiguous()
    target = layout.blocks(out if direct else torch.empty_like(x), axis, fmt.block)
    tag, element = _element(fmt, rounding)
    k = compiling.with_constants(fused_along, f"{tag}_emax{fmt.element.emax}".replace("-", "m"), "MX",
                                 emax=fmt.element.emax, **element)
    rand = _rand(rounding, rand_bits, generator, x.device)
    k(target, g, *rand, *([layout.moved_index(g)] if rand else []))
    dispatch.compiled_calls += 1
    return dispatch._result(x, out, target.view(x.shape), direct)


def quantize(x: torch.Tensor, fmt, rounding: str, rand_bits: int, generator, out: torch.Tensor | None):
    """MX quantization of float32 x whose last axis is the block axis and a multiple of the block."""
    el = fmt.element
    flat, target, direct = dispatch._operands(x, out, fmt.block)
    tag, element = _element(fmt, rounding)
    rand = _rand(rounding, rand_bits, generator, flat.device)
    if flat.numel() < FUSED_MAX:
        k = compiling.with_constants(fused, f"{tag}_emax{el.emax}".replace("-", "m"), "MX", emax=el.emax, **element)
        k(target, flat, *rand)
        dispatch.compiled_calls += 1
        return dispatch._result(x, out, target, direct)
    a_b = compiling.with_constants(block_binade_finite, "mx", "MX")(flat)  # the reference's, NaN/Inf or not
    s_down, s_up = compiling.with_constants(scales, f"emax{el.emax}".replace("-", "m"), "MX", emax=el.emax)(a_b)
    compiling.with_constants(round_into, tag, "MX", **element)(target, flat, s_down, s_up, *rand)
    dispatch.compiled_calls += 1
    return dispatch._result(x, out, target, direct)
