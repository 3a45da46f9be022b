"""Compiled kernels for ``blockwise.BlockScaledFormat`` (FP8 with a scale per 1-D block, per row or per 2-D tile),
round to nearest: the bits of the eager reference (``BlockScaledFormat._quantize``) in one graph, with the blocks
rounded where they lie in a contiguous tensor (no moved, padded or tile-view copy in or out):

  blocks n  along the last axis: x viewed as rows of (L/n, n), the amax a reduction along each block, a partial
            last block rounded as a line of its own; along another: x viewed as (outer, L, inner), then
            (outer, L/n, n, inner), the amax a max over rows vectorised along ``inner``, a partial last block
            zero-padded inside the graph (zeros never raise an amax) and the padding cropped from the result
  rows      (block None, or a line no longer than a block) one scale per line along the axis
  tiles r×c x viewed as (lead, R, C), then (lead, R/r, r, C/c, c) (one tile spanning a dim of at most r or c
            unpadded), partial tiles zero-padded and cropped likewise

Per block, as the reference (``blockwise.fp8_block_scale``): a = max |finite element|; s = fl32(max / a) from the
float64 quotient (torchao: a clamped below at 1e-12 first; te: an infinite s becomes FLT_MAX, and s = 1 where
a = 0); ``pow2`` rounds s down to a power of two, exactly. Per element:
v = clamp(fl32(x·s), ±max), r = RN(v) on the element grid (``grid_kernels.rn``; flushed below the smallest normal
for formats without subnormals, fnuz's -0 -> +0), y = r·fl32(1/s) (te) or r / s (torchao); NaN and ±Inf pass
through. One graph per (element, style, pow2, granularity, padded or not); sizes dynamic, except the row length
along the last axis (a layer's K, few values: a dynamic one costs a division and a modulo per vector to index the
block's scale, measured 2-3x slower).
"""
from __future__ import annotations

import torch

from . import compiling, dispatch, grid_kernels, layout
from .blockwise import fp8_block_scale



def supported(fmt, rounding: str) -> bool:
    """Whether the kernels here serve BlockScaledFormat ``fmt`` with ``rounding``: round to nearest, an element
    grid that ``grid_kernels.rn`` covers (m <= 22, smallest subnormal >= 2^-149)."""
    el = fmt.element
    return rounding == "nearest" and el.man <= 22 and el.emin - el.man >= -149


def usable(x: torch.Tensor, fmt, rounding: str) -> bool:
    """Whether ``quantize`` serves x: a supported format and rounding, float32 x of a compiled size
    (``dispatch.use_compiled``), at least 1-D (2-D for tiles)."""
    return (supported(fmt, rounding) and x.dim() >= (2 if isinstance(fmt.block, tuple) else 1)
            and dispatch.use_compiled(x))


def _scales(a, *, fmt_max: float, style: str, pow2: bool):
    """(s, d) per block from its finite amax a: the encode scale (``blockwise.fp8_block_scale``) and what r is
    multiplied by (te, fl32(1/s)) or divided by (torchao, s)."""
    s = fp8_block_scale(a, fmt_max, style, pow2)
    return s, (torch.reciprocal(s) if style == "te" else s)


def _round(x, s, d, *, style: str, man: int, emin: int, **finish):
    r = grid_kernels.rn(torch.clamp(x * s, -finish["maxval"], finish["maxval"]), man, emin)
    r = grid_kernels.saturated(r, **finish)
    y = r * d if style == "te" else r / d
    return torch.where(torch.isfinite(x), y, x)


def _finite_abs(g):
    return torch.where(torch.isfinite(g), g.abs(), torch.zeros_like(g))


def blocks_into(out, x3, *, n: int, pad: bool, fmt_max: float, pow2: bool, **element):
    """Blocks of n along dim 1 of x3 = x.view(outer, L, inner) (module docstring); ``pad``: L is not a multiple
    of n (one graph each). The rounding runs on the blocked view, the padding dropped from its result."""
    length = x3.shape[1]
    xp = torch.nn.functional.pad(x3, (0, 0, 0, (-length) % n)) if pad else x3
    g = xp.view(xp.shape[0], -1, n, xp.shape[2])
    s, d = _scales(_finite_abs(g).amax(dim=2, keepdim=True), fmt_max=fmt_max, style=element["style"], pow2=pow2)
    y = _round(g, compiling.materialised(s), compiling.materialised(d), **element).view(xp.shape)
    out.copy_(y[:, :length] if pad else y)


def last_blocks_into(out, x2, *, n: int, pad: bool, fmt_max: float, pow2: bool, **element):
    """Blocks of n along the last axis of x2 = x.view(outer, L): rows of n, the amax a reduction along each;
    ``pad``: a partial last block, rounded as a line of its own (its zero padding changes no amax)."""
    length = x2.shape[1]
    full = length // n
    g = (x2[:, :full * n] if pad else x2).view(x2.shape[0], full, n)
    s, d = _scales(_finite_abs(g).amax(dim=2, keepdim=True), fmt_max=fmt_max, style=element["style"], pow2=pow2)
    y = _round(g, compiling.materialised(s), compiling.materialised(d), **element).view(x2.shape[0], full * n)
    if pad:
        tail = x2[:, full * n:]
        s, d = _scales(_finite_abs(tail).amax(dim=1, keepdim=True), fmt_max=fmt_max, style=element["style"],
                       pow2=pow2)
        y = torch.cat([y, _round(tail, compiling.materialised(s), compiling.materialised(d), **element)], dim=1)
    out.copy_(y)


def rows_into(out, x3, *, fmt_max: float, pow2: bool, **element):
    """One scale per line along dim 1 of x3 = x.view(outer, L, inner) (block None), or along dim 1 of
    x3 = x.view(outer, L) (the last axis: a reduction along each row)."""
    s, d = _scales(_finite_abs(x3).amax(dim=1, keepdim=True), fmt_max=fmt_max, style=element["style"], pow2=pow2)
    out.copy_(_round(x3, compiling.materialised(s), compiling.materialised(d), **element))


def tiles_into(out, x3, *, r: int, c: int, pad: bool, one_row: bool, one_col: bool, fmt_max: float, pow2: bool,
               **element):
    """r×c tiles over the last two dims of x3 = x.view(lead, R, C); ``pad``: R or C is not a multiple (where more
    than one tile spans it); ``one_row``/``one_col``: R <= r / C <= c, one tile spans that dim unpadded. The amax
    of a tile is a max along each of its rows, then over its rows."""
    rows, cols = x3.shape[1], x3.shape[2]
    pr = 0 if one_row else (-rows) % r
    pc = 0 if one_col else (-cols) % c
    xp = torch.nn.functional.pad(x3, (0, pc, 0, pr)) if pad else x3
    tr = xp.shape[1] if one_row else r
    tc = xp.shape[2] if one_col else c
    g = xp.view(xp.shape[0], xp.shape[1] // tr, tr, xp.shape[2] // tc, tc)
    a = _finite_abs(g).amax(dim=4, keepdim=True).amax(dim=2, keepdim=True)
    s, d = _scales(a, fmt_max=fmt_max, style=element["style"], pow2=pow2)
    y = _round(g, compiling.materialised(s), compiling.materialised(d), **element).view(xp.shape)
    out.copy_(y[:, :rows, :cols] if pad else y)


def _element(fmt) -> tuple[str, dict]:
    """(tag, keywords): the constants baked into each compiled copy, and a tag naming them."""
    tag, element = grid_kernels.element_constants(fmt.element)
    return (f"{tag}_{fmt.style}_p{int(fmt.pow2)}",
            dict(fmt_max=float(fmt.element.max), pow2=bool(fmt.pow2), style=fmt.style, **element))


def quantize(x: torch.Tensor, fmt, out: torch.Tensor | None = None) -> torch.Tensor:
    """``fmt.quantize(x)`` rounded to nearest (``usable``), in x's own layout (a contiguous copy of a strided x
    first)."""
    x = x.detach().contiguous()
    direct = out is not None and out.is_contiguous()
    target = out if direct else torch.empty_like(x)
    tag, element = _element(fmt)
    block = fmt.block
    if isinstance(block, tuple):
        r, c = block
        x3 = x.view(-1, x.shape[-2], x.shape[-1])
        rows, cols = x3.shape[1:]
        if rows <= r and cols <= c:  # one (zero-padded) tile per matrix: its amax is the matrix's
            x3, kernel, name, kw = x3.view(x3.shape[0], -1), rows_into, "row", {}
        else:
            one_row, one_col = rows <= r, cols <= c
            pad = bool((not one_row and rows % r) or (not one_col and cols % c))
            kernel, kw = tiles_into, dict(r=r, c=c, pad=pad, one_row=one_row, one_col=one_col)
            name = f"{r}x{c}_pad{int(pad)}_{int(one_row)}{int(one_col)}"
    else:
        x3 = layout.around(x, fmt.axis)
        last = x3.shape[2] == 1  # the last axis (or only trailing 1s): lines are rows
        if last:  # the row length static (module docstring)
            x3 = x3.view(x3.shape[0], x3.shape[1])
            torch._dynamo.mark_static(x3, 1)
        if block is None or x3.shape[1] <= block:  # one (zero-padded) block per line
            kernel, name, kw = rows_into, "row", {}
        else:
            pad = bool(x3.shape[1] % block)
            kernel, kw = (last_blocks_into if last else blocks_into), dict(n=block, pad=pad)
            name = f"1x{block}_{'last' if last else 'along'}_pad{int(pad)}"
    k = compiling.with_constants(kernel, f"{tag}_{name}", "FP8 blockwise", **kw, **element)
    k(target.view(x3.shape), x3)
    dispatch.compiled_calls += 1
    return dispatch._result(x, out, target, direct)
