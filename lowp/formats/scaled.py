"""Shared machinery for formats that carry a scale: integer rounding on a grid, and amax over groups/axes."""
from __future__ import annotations

import torch

from ..rounding import draw_key, hash_bits


def round_to_int(
    v: torch.Tensor, rounding: str, rand_bits: int, generator: torch.Generator | None,
    *, rand: torch.Tensor | None = None,
) -> torch.Tensor:
    """Round ``v`` (float32/float64) to integers with ``rounding``; exact (floor/ceil/trunc and a parity check).
    A zero result has the sign of v in every mode (-0.3 gives -0, as torch.round does).

    Stochastic, k = ``rand_bits``: with r a k-bit random integer per element, round up iff
    r + floor(frac(v) * 2^k) >= 2^k (hardware: add k random bits below the LSB and truncate), so P(up) =
    floor(frac * 2^k) / 2^k. r comes from the counter-based ``hash_bits`` keyed by ``generator`` (reproducible),
    or is given explicitly as ``rand`` (int64, v's shape; tests).
    """
    if rounding == "nearest":
        return torch.round(v)  # torch.round is round-half-to-even
    if rounding == "zero":
        return torch.trunc(v)
    if rounding == "up":
        return torch.ceil(v)
    if rounding == "down":
        return torch.floor(v)
    if rounding == "away":
        f = torch.floor(v)
        frac = v - f  # exact for |v| < 2^52 (float64) or the float32 mantissa range
        up = (frac > 0.5) | ((frac == 0.5) & (v > 0))
        return torch.copysign(torch.where(up, f + 1, f), v)
    # stochastic: frac = v - floor(v) is exact; compare frac * 2^k against k random bits
    f = torch.floor(v)
    frac = v - f
    if rand is None:
        idx = torch.arange(v.numel(), dtype=torch.int64, device=v.device).view(v.shape)
        rand = hash_bits(idx, draw_key(generator).to(v.device)) >> (32 - rand_bits)
    top = torch.floor(frac.double() * float(2**rand_bits)).to(torch.int64)  # exact: frac is exact, 2^k a power
    up = (rand + top) >= (1 << rand_bits)
    return torch.copysign(torch.where(up, f + 1, f), v)  # a zero result keeps v's sign, as round/trunc/ceil do


def group_view(x: torch.Tensor, axis: int, block: int | None) -> tuple[torch.Tensor, callable]:
    """Move ``axis`` last and split it into blocks of ``block`` (None: the whole axis), padding with zeros.

    Returns (tensor of shape (..., nblocks, block), inverse) where inverse maps a tensor of that shape back to x's
    shape (dropping the padding). Zero padding does not change any block's amax.
    """
    axis = axis % x.dim() if x.dim() else 0
    xt = x.movedim(axis, -1) if x.dim() else x.reshape(1)
    n = xt.shape[-1]
    b = n if block is None else block
    pad = (-n) % b
    if pad:
        xt = torch.nn.functional.pad(xt, (0, pad))
    shape_t = xt.shape
    g = xt.reshape(*shape_t[:-1], shape_t[-1] // b, b)

    def inverse(y: torch.Tensor) -> torch.Tensor:
        y = y.reshape(shape_t)[..., :n]
        return y.movedim(-1, axis).contiguous() if x.dim() else y.reshape(x.shape)

    return g, inverse


def amax(g: torch.Tensor) -> torch.Tensor:
    """max |finite value| over the last dim (NaN/Inf ignored), keepdim."""
    a = torch.where(torch.isfinite(g), g.abs(), torch.zeros_like(g))
    return a.amax(dim=-1, keepdim=True)
