"""Compiled twin of ``nvfp4.NVFP4Format`` (TE and torchao orders, 1×16 blocks and 16×16 tiles): the same bits.

The eager reference (``nvfp4.py``) makes several passes over the tensor and its copies (tile view, float32 copy,
block amax, E4M3 and E2M1 rounding, the decode, the NaN/Inf restore). Here the tensor is laid out as the rows of
the reference's ``tile_view`` (a view of x when the blocks run along the last, contiguous axis and fill it exactly;
else one transposed / zero-padded copy, so every element keeps its position and, under stochastic rounding, its
random bits) and three compiled graphs do the work:

  ``block_amax``   a_b = max |g| per row over its finite elements (the reference's) and A = max a_b: rows of
                   16 on the bit patterns (``mx_compiled.block_amax_finite``: no NaN in the reduction, no host
                   check); 16×16 tiles as a plain vectorized reduction with NaN/Inf included (inductor runs a
                   masked one ~2.5x slower), recomputed over the finite elements only when A is not finite (a host
                   check, as the reference's)                                                      one read of x
  ``te_scales`` / ``torchao_scales``   the per-tensor and per-block scales of ``nvfp4.py``'s docstring (same
                   float32 operations in the same order; divisors passed as 0-d tensors, so that no backend turns
                   a division into a multiplication), vectorized over the rows          a pass over a_b (1/16)
  ``te_into`` / ``torchao_into``   E2M1 rounding; out = fl32((q·d_b)·s_dec), non-finite elements passed through
                                                                                             one read, one write

E4M3 (scales) and E2M1 (elements, nearest and stochastic) use ``grid_kernels`` (the short paths' add-and-mask /
magic-number rounding with the formats' constants as literals, and the general kernel's stochastic rule with its
random bits: the hash of the element's position in the tile view under one key drawn from ``generator``, as the
reference); the directed roundings run ``round_compiled.round_f32``, the int32 twin of the general kernel.
One graph per (kernel, rounding) and row length; shapes are dynamic (rows), so no shape or rank recompiles.
For 16x16 tiles below ``FUSED_MAX`` elements the three run as one graph (``fused``: one compiled call instead of
three and no host sync; measured 165 vs 302 µs at 2^17 elements, even at 2^20). For 1x16 rows the fused graph was no
faster (2^17: 301 vs 304 µs; 2^19: 881 vs 632 µs), so rows keep the three kernels.
"""
from __future__ import annotations


import torch

from ..rounding import draw_key
from . import compiling, dispatch, grid_kernels, layout, round_compiled
from .mx_compiled import block_amax_finite  # (a_b, A) per row of 16, as for MX blocks
from .round_reference import MODE_CODE

F32 = torch.float32
FUSED_MAX = 1 << 20  # elements of a 16x16-tiled tensor below which ``fused`` serves
HALVES = (torch.bfloat16, torch.float16)
FLT_MAX = torch.finfo(torch.float32).max


# ---- kernels (plain torch functions, compiled lazily by ``_compiled``) ------------------------------------------

def _e2m1(v, mode, e2m1_params, rand_k, key, idx=None):
    """E2M1 rounding of the clamped v (|v| <= 6 or NaN) in rounding mode ``mode`` (a MODE_CODE); ``idx``: the
    elements' random-bit indices (default: the tile-view order for a 4-D v, else the flat index)."""
    if mode == 0:
        return grid_kernels.rn(v, 1, 0)
    if mode == 5:
        if idx is None and v.dim() == 4:  # 16x16 tiles seen in x's layout (nr, 16, nc, 16): the tile-view order
            nr, r, nc, c = v.shape
            idx = torch.arange(v.numel(), dtype=torch.int32, device=v.device).view(nr, nc, r, c).permute(0, 2, 1, 3)
        return grid_kernels.sr(v, 1, 0, rand_k, key, idx)
    man, emin, maxval, over_inf, saturate, subnormals, no_negzero, minnorm = e2m1_params
    return round_compiled.round_f32(v, man, emin, maxval, over_inf, saturate, subnormals, no_negzero, minnorm,
                                  mode=mode, rand_k=rand_k, key=key,
                                  base=torch.zeros((), dtype=torch.int64, device=v.device))


def tile_amax(g):
    """``block_amax`` for 16x16 tiles seen in x's own layout, g = (nr, 16, nc, 16): a_b shaped (nr, 1, nc, 1)."""
    a_b = g.abs().amax(dim=(1, 3), keepdim=True)
    return a_b, a_b.amax()


def tile_amax_finite(g):
    a_b = torch.where(torch.isfinite(g), g.abs(), torch.zeros_like(g)).amax(dim=(1, 3), keepdim=True)
    return a_b, a_b.amax()


def te_scales(a_b, big_a, c2688):
    """TE order, per row: (e_b, d_b) and the tensor's s_dec (``nvfp4.py``), in one vectorized pass over the rows
    (kept out of the rounding graph, where inductor would compute them per row in scalar code)."""
    s_enc = torch.clamp(c2688 / big_a, max=FLT_MAX)
    s_enc = torch.where(s_enc == 0, torch.ones_like(s_enc), s_enc)
    s_dec = torch.reciprocal(s_enc)
    d = torch.clamp(a_b * (s_enc * 0.1666666716337204), max=FLT_MAX)  # fl32(1/6), TE's reciprocal(6.0)
    d_b = grid_kernels.rn(torch.clamp(d, max=448.0), 3, -6)
    e_b = torch.clamp(torch.reciprocal(d_b * s_dec), max=FLT_MAX)
    return e_b, d_b, s_dec


def torchao_scales(a_b, big_a, c2688, c6):
    """torchao order, per row: (fl32(s_dec·d_b), d_b) and s_dec."""
    s_dec = big_a / c2688
    d_b = grid_kernels.rn(torch.clamp((a_b / c6) / s_dec, min=2.0**-6, max=448.0), 3, -6)
    return s_dec * d_b, d_b, s_dec


def te_into(out, g, e_b, d_b, s_dec, e2m1_params, *, mode: int = 0, rand_k=None, key=None, idx=None):
    """TE order (``nvfp4.py``): out = fl32((e2m1(clamp(g·e_b, ±6))·d_b)·s_dec), non-finite g passed through."""
    q = _e2m1(torch.clamp(g * e_b, -6.0, 6.0), mode, e2m1_params, rand_k, key, idx)
    y = (q * d_b) * s_dec
    out.copy_(torch.where(torch.isfinite(g), y, g))


def torchao_into(out, g, m_b, d_b, s_dec, e2m1_params, *, mode: int = 0, rand_k=None, key=None, idx=None):
    """torchao order (``nvfp4.py``), m_b = fl32(s_dec·d_b); a tensor whose s_dec is 0 gives ±0, a zero element
    stays 0."""
    v = g / m_b
    v = torch.where(g == 0, g, v)
    q = _e2m1(torch.clamp(v, -6.0, 6.0), mode, e2m1_params, rand_k, key, idx)
    y = (q * d_b) * s_dec
    y = torch.where(s_dec == 0, g * 0.0, y)
    out.copy_(torch.where(torch.isfinite(g), y, g))


def fused(out, g, c2688, c6, e2m1_params, rand_k=None, key=None, *, order: str = "te", mode: int = 0):
    """``tile_amax``, the scales and the rounding in one graph, for 16x16 tiles in x's own layout (g = (nr, 16, nc,
    16)). The tile and tensor amaxes are taken over finite elements: in a tile without NaN/Inf that is its plain
    amax, so they are the reference's in every case (the separate kernels check A on the host to pick the cheaper
    pass)."""
    _scale_and_round_in_graph(out, g, *tile_amax_finite(g), c2688, c6, e2m1_params, rand_k, key, None, order, mode)


def _scale_and_round_in_graph(out, g, a_b, big_a, c2688, c6, e2m1_params, rand_k, key, idx, order, mode):
    """The scales of ``order`` from the amaxes, materialised, then the rounding into out (inside one graph)."""
    if order == "torchao":
        m_b, d_b, s_dec = torchao_scales(a_b, big_a, c2688, c6)
        into = torchao_into
    else:
        m_b, d_b, s_dec = te_scales(a_b, big_a, c2688)
        into = te_into
    mat = compiling.materialised
    into(out, g, mat(m_b), mat(d_b), mat(s_dec), e2m1_params, mode=mode, rand_k=rand_k, key=key, idx=idx)


def fused_along(out, g, c2688, c6, e2m1_params, rand_k=None, key=None, idx=None, *, order: str = "te",
                mode: int = 0):
    """The amaxes, the scales and the rounding in one graph, for 1x16 blocks along dim 2 of g = x.view(outer,
    n / 16, 16, inner), x contiguous: the blocks of ``x.movedim(axis, -1)`` rounded where they lie, out in x's
    layout (a block amax is a max over rows, vectorised along ``inner``; no transposed copy in or out). Amaxes over
    finite elements (the reference's, as in ``fused``); random bits at each element's flat index in the moved
    layout (outer, inner, n), as the reference's ``group_view`` rows (``idx``: ``layout.moved_index``)."""
    _scale_and_round_in_graph(out, g, *block_amax_finite_along(g), c2688, c6, e2m1_params, rand_k, key, idx, order,
                              mode)


def block_amax_finite_along(g):
    """(a_b, A) over finite elements for blocks along dim 2 of a 4-D g: a_b shaped (outer, nb, 1, inner)."""
    a_b = torch.where(torch.isfinite(g), g.abs(), torch.zeros_like(g)).amax(dim=2, keepdim=True)
    return a_b, a_b.amax()


_FNS = {"amax_finite": block_amax_finite, "tile_amax": tile_amax,
        "tile_amax_finite": tile_amax_finite, "te_scales": te_scales,
        "torchao_scales": torchao_scales, "te": te_into, "torchao": torchao_into}
def _compiled(which: str, mode: str | None = None):
    """Kernel ``which`` compiled (``compiling.compiled``: dynamic shapes, full graph, no grad, the package's one
    cache); with ``mode``, a copy of its own code object for that rounding mode (dynamo caches and counts graphs per
    code object)."""
    key = ("nvfp4_compiled", which, mode)
    fn = compiling.cached(key)
    if fn is None:
        kernel = _FNS[which] if mode is None else dispatch._with_mode(_FNS[which], mode)
        fn = compiling.compiled(kernel, key, what=f"NVFP4 {which}")
    return fn


# ---- dispatch ---------------------------------------------------------------------------------------------------

def usable(x: torch.Tensor, *, force: str | None = None) -> bool:
    """Whether the compiled path serves x: float32 (or bfloat16/float16, rounded from its float32 copy as the
    reference does) and the rules of ``dispatch.use_compiled`` (size, ``LOWP_COMPILE``, no user torch function or
    dispatch mode); ``force`` "compiled" | "eager" overrides the size rule (not the others)."""
    if x.dtype not in HALVES + (torch.float32,) or x.numel() >= dispatch.MAX_NUMEL or force == "eager":
        return False
    if force == "compiled":
        return compiling.compile_enabled()
    return compiling.worth_it(x.numel())


def _layout(x: torch.Tensor, fmt):
    """(g: contiguous rows of one scale group in the reference's tile-view order, row length, inverse or None
    when g is a view of x itself)."""
    if isinstance(fmt.block, tuple):
        from .tiles import tile_view

        g, inv = tile_view(x, fmt.axis, fmt.block)
        rl = g.shape[-1]
        return g.contiguous().reshape(-1, rl), rl, inv
    b = fmt.block
    if x.dim() >= 1 and fmt.axis % x.dim() == x.dim() - 1 and x.shape[-1] % b == 0 and x.is_contiguous():
        return x, b, None
    from .scaled import group_view

    g, inv = group_view(x, fmt.axis, b)
    return g.contiguous().reshape(-1, b), b, inv


_E2M1_P: dict = {}


def _e2m1_params(device):
    p = _E2M1_P.get(device)
    if p is None:
        from .nvfp4 import E2M1

        k = dispatch._params32(E2M1.kernel_params(torch.float32))
        p = _E2M1_P[device] = tuple(dispatch._on(v, device) for v in (
            k["man"], k["emin"], k["maxval"], k["over_inf"], torch.tensor(False), k["subnormals"], k["no_negzero"],
            k["minnorm"]))
    return p


_C: dict = {}


def _const(v: float, device) -> torch.Tensor:
    t = _C.get((v, device))
    if t is None:
        t = _C[(v, device)] = torch.tensor(v, dtype=F32, device=device)
    return t


def quantize(x: torch.Tensor, fmt, rounding: str, rand_bits: int, generator, out: torch.Tensor | None):
    """``fmt.quantize(x, rounding, ...)`` by the compiled kernels (same bits as the reference)."""
    if x.dtype in HALVES:  # the reference rounds x.float() and casts the result back
        return quantize(x.float(), fmt, rounding, rand_bits, generator, None).to(x.dtype)
    if _tiles_in_place(x, fmt):
        return _quantize_tiles(x, fmt, rounding, rand_bits, generator, out)
    if along_layout_ok(x, fmt, fmt.axis, rounding):
        return _quantize_along(x, fmt, rounding, rand_bits, generator, out)
    g, rl, inv = _layout(x, fmt)
    direct = inv is None
    flat, target, direct = dispatch._operands(g, out if direct else None, rl)
    a_b, big_a = _compiled("amax_finite")(flat)  # over the finite elements (the reference's): no host check
    return _scale_and_round(x, fmt, rounding, rand_bits, generator, out, flat, target, direct, inv, a_b, big_a)


def _tiles_in_place(x, fmt) -> bool:
    """16x16 tiles over a contiguous x whose last two dims are multiples of 16: the kernels read x's own layout
    (a (nr, 16, nc, 16) view, leading dims folded into the rows) rather than a tile-view copy."""
    return (fmt.block == (16, 16) and x.dim() >= 2 and x.shape[-1] % 16 == 0 and x.shape[-2] % 16 == 0
            and x.is_contiguous())


def along_layout_ok(x: torch.Tensor, fmt, axis: int, rounding: str) -> bool:
    """1x16 blocks along ``axis`` of x, not its last, in a layout ``layout.in_place_ok`` accepts, rounded to nearest
    or stochastically: ``fused_along`` rounds them where they lie."""
    return (isinstance(fmt.block, int) and x.dim() >= 2 and axis % x.dim() != x.dim() - 1
            and layout.in_place_ok(x, axis, fmt.block) and rounding in ("nearest", "stochastic"))


def _quantize_along(x, fmt, rounding, rand_bits, generator, out):
    g4 = layout.blocks(x.detach(), fmt.axis, fmt.block)
    direct = out is not None and out.is_contiguous()
    target = layout.blocks(out if direct else torch.empty_like(x), fmt.axis, fmt.block)
    dev = g4.device
    k = compiling.with_constants(fused_along, f"{fmt.order}_{rounding}", "NVFP4", order=fmt.order,
                                 mode=MODE_CODE[rounding])
    rand = _random(rounding, rand_bits, generator, dev)
    if rand:
        rand["idx"] = layout.moved_index(g4)
    k(target, g4, _const(2688.0, dev), _const(6.0, dev), _e2m1_params(dev), **rand)
    return _finish(x, out, target.view(x.shape), direct, None)


def _view4(t: torch.Tensor, cols: int) -> torch.Tensor:
    v = t.reshape(-1, 16, cols // 16, 16).detach()
    torch._dynamo.mark_static(v, 1)
    torch._dynamo.mark_static(v, 3)
    return v


def _quantize_tiles(x, fmt, rounding, rand_bits, generator, out):
    cols = x.shape[-1]
    g4 = _view4(x, cols)
    direct = out is not None and out.is_contiguous()
    target = _view4(out if direct else torch.empty_like(x), cols)
    if g4.numel() < FUSED_MAX:
        return _fused_tiles(x, fmt, rounding, rand_bits, generator, out, g4, target, direct)
    a_b, big_a = _compiled("tile_amax")(g4)
    if not bool(torch.isfinite(big_a)):
        a_b, big_a = _compiled("tile_amax_finite")(g4)
    return _scale_and_round(x, fmt, rounding, rand_bits, generator, out, g4, target, direct, None, a_b, big_a)


def _fused_tiles(x, fmt, rounding, rand_bits, generator, out, g4, target, direct):
    dev = g4.device
    k = compiling.with_constants(fused, f"{fmt.order}_{rounding}", "NVFP4", order=fmt.order, mode=MODE_CODE[rounding])
    k(target, g4, _const(2688.0, dev), _const(6.0, dev), _e2m1_params(dev), **_random(rounding, rand_bits, generator,
                                                                                     dev))
    return _finish(x, out, target, direct, None)


def _random(rounding, rand_bits, generator, dev) -> dict:
    if rounding != "stochastic":
        return {}
    return {"rand_k": dispatch._on(dispatch._RANDK_T[rand_bits], dev), "key": dispatch._on(draw_key(generator), dev)}


def _finish(x, out, target, direct, inv):
    dispatch.compiled_calls += 1
    if inv is None:
        return dispatch._result(x, out, target, direct)
    y = inv(target)  # the inverse reshapes the rows back to x's layout and drops the padding
    if out is not None:
        out.copy_(y)
        return out
    return y


def _scale_and_round(x, fmt, rounding, rand_bits, generator, out, flat, target, direct, inv, a_b, big_a):
    dev = flat.device
    if fmt.order == "torchao":
        m_b, d_b, s_dec = _compiled("torchao_scales")(a_b, big_a, _const(2688.0, dev), _const(6.0, dev))
    else:
        m_b, d_b, s_dec = _compiled("te_scales")(a_b, big_a, _const(2688.0, dev))
    args = [target, flat, m_b, d_b, s_dec, _e2m1_params(dev)]
    _compiled(fmt.order, rounding)(*args, **_random(rounding, rand_bits, generator, dev))
    return _finish(x, out, target, direct, inv)
