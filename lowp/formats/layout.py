"""Layouts for rounding blocks along one axis (the axis of an operand's GEMM reduction, docs/accelerator-recipes.md).

In place: a contiguous tensor viewed as (outer, n, inner) around the axis (``around``; the FP8 blockwise kernels) or
as (outer, n / block, block, inner) (``blocks``), which the MX and NVFP4 kernels and the Hadamard transform work on
where the elements lie (``in_place_ok``); ``moved_index`` gives each element its flat index in the tensor with the
axis moved last, where the reference draws its random bits.

Moved: a tensor with one axis moved last, as a contiguous copy (the layout the references build).

Where moving the axis last is a transpose of the last two dims of a contiguous tensor (a weight's columns, an
activation's batch axis for the weight gradient), the copy is a compiled transposition (``compiling.compiled``,
inductor's tiled loops): ATen's strided copy of a 1024×1024 transpose takes 7–15× an add on this CPU, the compiled
one about 2.3×. Otherwise, or with compilation off, ``.contiguous()``. The values are the same either way: only
where they sit in memory differs.
"""
from __future__ import annotations

import collections
import threading

import torch

from . import compiling

I32 = torch.int32


def _transposed(out: torch.Tensor, base: torch.Tensor) -> None:
    out.copy_(base.transpose(-1, -2))


def contiguous(v: torch.Tensor) -> torch.Tensor:
    """``v.contiguous()``, through the compiled transposition where v is a transpose of the last two dims of a
    contiguous float32 tensor (of ``compiling.worth_it`` size)."""
    if v.is_contiguous() or v.dim() < 2:
        return v.contiguous()
    base = v.transpose(-1, -2)
    if base.is_contiguous() and v.dtype == torch.float32 and compiling.worth_it(base.numel()):
        out = torch.empty(v.shape, dtype=v.dtype, device=v.device)
        compiling.compiled(_transposed)(out, base)
        return out
    return v.contiguous()


def axis_last(x: torch.Tensor, axis: int) -> torch.Tensor:
    """``x.movedim(axis, -1).contiguous()`` (a 0-d x: itself)."""
    return contiguous(x.movedim(axis % x.dim(), -1)) if x.dim() else x


def in_place_ok(x: torch.Tensor, axis: int, block: int) -> bool:
    """Whether blocks of ``block`` along ``axis`` of x can be rounded where they lie: x contiguous float32 and not
    empty, the axis length a multiple of the block (the last axis: rows of x; another: ``blocks``)."""
    return (x.dim() >= 1 and x.numel() > 0 and x.is_contiguous() and x.dtype == torch.float32
            and x.shape[axis] % block == 0)


def around(x: torch.Tensor, axis: int) -> torch.Tensor:
    """Contiguous x viewed as (outer, n, inner) around ``axis`` (length n)."""
    ax = axis % x.dim()
    outer = 1
    for d in x.shape[:ax]:
        outer *= d
    inner = 1
    for d in x.shape[ax + 1:]:
        inner *= d
    return x.view(outer, x.shape[ax], inner)


def blocks(x: torch.Tensor, axis: int, block: int) -> torch.Tensor:
    """Contiguous x viewed as (outer, n / block, block, inner) around ``axis`` (length n), the block dim static for
    the compiled kernels (one graph per block length)."""
    outer, n, inner = around(x, axis).shape
    v = x.view(outer, n // block, block, inner)
    torch._dynamo.mark_static(v, 2)
    return v


_IDX: "collections.OrderedDict[tuple, torch.Tensor]" = collections.OrderedDict()
_IDX_LOCK = threading.Lock()
IDX_CACHE_BYTES = 64 << 20  # the index tensors kept (least recently used dropped first)


def moved_index(g: torch.Tensor) -> torch.Tensor:
    """int32 random-bit index of each element of g = ``blocks(x, axis, block)``: its flat index in
    ``x.movedim(axis, -1)``, of shape (outer, inner, nb·block), o·inner·n + c·n + m. A tensor passed to the kernels,
    cached per shape: computed inside a graph, the index is not affine along the vectorised dim and inductor writes
    that loop in scalar code (measured 3.5x slower at 2^19 elements)."""
    outer, nb, block, inner = g.shape
    key = (outer, nb, block, inner, g.device)
    with _IDX_LOCK:
        idx = _IDX.get(key)
        if idx is not None:
            _IDX.move_to_end(key)
            return idx
    n = nb * block
    idx = (torch.arange(g.numel(), dtype=I32, device=g.device).view(outer, inner, n).transpose(1, 2)
           .contiguous().view(outer, nb, block, inner))
    torch._dynamo.mark_static(idx, 2)
    if idx.numel() * 4 <= IDX_CACHE_BYTES:
        with _IDX_LOCK:
            _IDX[key] = idx
            while sum(t.numel() * 4 for t in _IDX.values()) > IDX_CACHE_BYTES:
                _IDX.popitem(last=False)
    return idx
