"""A tensor with one axis moved last, as a contiguous copy: the layout that block formats round along (the axis of
an operand's GEMM reduction, docs/accelerator-recipes.md).

Where moving the axis last is a transpose of the last two dims of a contiguous tensor (a weight's columns, an
activation's batch axis for the weight gradient), the copy is a compiled transposition (``compiling.compiled``,
inductor's tiled loops): ATen's strided copy of a 1024×1024 transpose takes 7–15× an add on this CPU, the compiled
one about 2.3×. Otherwise, or with compilation off, ``.contiguous()``. The values are the same either way: only
where they sit in memory differs.
"""
from __future__ import annotations

import torch

from . import compiling


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
