"""Scaling granularities as views: 1-D blocks along one axis, whole rows/columns, and 2-D tiles (docs/accelerator-recipes.md).

``tile_view(x, axis, block)`` returns ``(g, inverse)`` where the last dim of ``g`` holds the elements that share one
scale and ``inverse`` maps a tensor shaped like ``g`` back to x's shape:

  block = n (int)        blocks of n consecutive elements along ``axis``            g: (..., nblocks, n)
  block = None           the whole ``axis`` (per-row / per-column scaling)          g: (..., 1, len(axis))
  block = (r, c)         r×c tiles over the last two dims (``axis`` is ignored: a   g: (..., R/r, C/c, r·c)
                         square tile of W and of Wᵀ cover the same elements; a
                         0-d or 1-D tensor is one row)

Rows shorter than a block, and dims that are not a multiple of the tile, are padded with zeros (our choice, as
TE's reference pads; zeros never change a block's amax); the padding is dropped by ``inverse``.
"""
from __future__ import annotations

import torch

from .scaled import amax, group_view

Block = int | tuple[int, int] | None


def check_block(block, what: str) -> Block:
    """Validate a granularity: a positive int, None, or a pair of positive ints; returns it (tuples normalised)."""
    if block is None:
        return None
    if isinstance(block, list):
        block = tuple(block)
    if isinstance(block, tuple):
        if len(block) != 2 or not all(isinstance(b, int) and not isinstance(b, bool) and b >= 1 for b in block):
            raise ValueError(f"{what} tile must be a pair of positive ints, got {block!r}")
        return block
    if isinstance(block, bool) or not isinstance(block, int) or block < 1:
        raise ValueError(f"{what} block must be a positive int, a pair (rows, cols) or None, got {block!r}")
    return block


def block_label(block: Block) -> str:
    if block is None:
        return "row"
    if isinstance(block, tuple):
        return f"{block[0]}x{block[1]}"
    return f"1x{block}"


def tile_view(x: torch.Tensor, axis: int, block: Block):
    """(g, inverse) as in the module docstring."""
    if not isinstance(block, tuple):
        return group_view(x, axis, block)
    if x.dim() < 2:  # a scalar or a vector is one row
        g, inv = tile_view(x.reshape(1, -1), axis, block)
        return g, lambda y: inv(y).reshape(x.shape)
    r, c = block
    rows, cols = x.shape[-2:]
    pr, pc = (-rows) % r, (-cols) % c
    xp = torch.nn.functional.pad(x, (0, pc, 0, pr)) if (pr or pc) else x
    lead = xp.shape[:-2]
    nr, nc = xp.shape[-2] // r, xp.shape[-1] // c
    g = xp.reshape(*lead, nr, r, nc, c).transpose(-3, -2).reshape(*lead, nr, nc, r * c)

    def inverse(y: torch.Tensor) -> torch.Tensor:
        y = y.reshape(*lead, nr, nc, r, c).transpose(-3, -2).reshape(*lead, nr * r, nc * c)
        return y[..., :rows, :cols].contiguous()

    return g, inverse


def block_amax(g: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """(max |finite value| over the last dim of g (keepdim), whether every element of g is finite). One plain
    abs-amax pass; the masked pass (NaN/Inf ignored) runs only when a non-finite value is present."""
    a = g.abs().amax(dim=-1, keepdim=True)
    if bool(torch.isfinite(a).all()):
        return a, True
    return amax(g), False
