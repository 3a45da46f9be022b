"""The public ``quantize`` and its straight-through (autograd) variant."""
from __future__ import annotations

import torch

from .formats import Format, get_format


def quantize(
    x: torch.Tensor,
    fmt: str | Format,
    rounding: str = "nearest",
    *,
    saturate: bool = False,
    rand_bits: int | None = None,
    generator: torch.Generator | None = None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Round every element of ``x`` to a value of ``fmt`` (a name or a Format); returns a new tensor of x's dtype
    (or ``out``, preallocated, for the fast path). See ``lowp.rounding`` for the modes and ``lowp.formats.float``
    for special values and overflow."""
    return get_format(fmt).quantize(x, rounding, saturate=saturate, rand_bits=rand_bits, generator=generator, out=out)


class _STE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, fmt, rounding, saturate, rand_bits, generator):
        return fmt.quantize(x, rounding, saturate=saturate, rand_bits=rand_bits, generator=generator)

    @staticmethod
    def backward(ctx, g):
        return g, None, None, None, None, None


def quantize_ste(
    x: torch.Tensor,
    fmt: str | Format,
    rounding: str = "nearest",
    *,
    saturate: bool = False,
    rand_bits: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """``quantize`` in the forward pass, identity gradient in the backward pass (straight-through estimator)."""
    return _STE.apply(x, get_format(fmt), rounding, saturate, rand_bits, generator)
