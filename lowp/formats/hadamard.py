"""Random Hadamard transform (RHT) in blocks along one axis (TE NVFP4 recipe; Quartet, Castro et al. 2025).

H = (1/√n)·diag(s)·H_n with H_n the Sylvester Hadamard matrix (H_1 = [1], H_2k = [[H_k, H_k], [H_k, -H_k]]) and
s a ±1 sign vector; a block v (a row vector of n consecutive elements along ``axis``) becomes v·H. H is orthogonal
(H·Hᵀ = (1/n)·diag(s)·H_n·H_nᵀ·diag(s) = I), so rotating both operands of a GEMM along its reduction axis leaves
the product unchanged in exact arithmetic: (A·H)(B·H)ᵀ = A·Bᵀ; it spreads outliers over the block before
quantization (amax is taken after the rotation). For n = 16 (TE's default) the entries are exactly ±1/4; for n a
power of 4 they are exact powers of two, otherwise 1/√n is rounded to float32 and H·Hᵀ = I holds only to rounding.

Signs: ``seed=None`` uses TE's fixed 16-entry wgrad sign vector (``get_wgrad_sign_vector`` in TE's NVFP4
reference); an int ``seed`` draws the n signs from ``torch.Generator().manual_seed(seed)`` (reproducible);
``signs`` gives them explicitly. The transform runs in float32 (float64 for float64 input), as the references do,
but as a fast Walsh–Hadamard transform (``fwht``: log2(n) butterfly stages on the blocks where they lie, one
compiled pass at any size) rather than a GEMM of each block with H: the references' last bit follows their GEMM library's
summation order; here each output is one fixed tree of adds, the same in every layout. The axis length must be a
multiple of n (TE refuses other lengths too), unless ``pad=True``: then the axis is first zero-padded to the next
multiple of n, so the result is longer. Rotating both operands of a GEMM that way leaves the product unchanged
((H·[a; 0])ᵀ(H·[g; 0]) = aᵀg: the padded rows add nothing), which is how lowp's ops treat a reduction that is not
a multiple of the block (e.g. a last or dry-run batch of 2 samples).
"""
from __future__ import annotations

import dataclasses
import functools
import math

import torch

from . import compiling, layout

TE_WGRAD_SIGNS = (1, 1, 1, -1, 1, -1, -1, -1, -1, -1, -1, 1, -1, 1, -1, -1)


def sylvester(n: int) -> torch.Tensor:
    """The n×n Sylvester Hadamard matrix (entries ±1, float32); n a power of two."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1 or n & (n - 1):
        raise ValueError(f"Hadamard size must be a power of two, got {n!r}")
    h = torch.ones(1, 1)
    while h.shape[0] < n:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    return h


@dataclasses.dataclass(frozen=True)
class RandomHadamard:
    """The RHT of the module docstring: ``block`` n (a power of two), signs from ``seed`` or ``signs``."""

    block: int = 16
    seed: int | None = None
    signs: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        sylvester(self.block)  # validates block
        if self.signs is not None:
            sg = tuple(int(v) for v in self.signs)
            if len(sg) != self.block or any(v not in (1, -1) for v in sg):
                raise ValueError(f"RandomHadamard signs must be {self.block} values of ±1, got {self.signs!r}")
            object.__setattr__(self, "signs", sg)
        elif self.seed is None and self.block != len(TE_WGRAD_SIGNS):
            raise ValueError(f"RandomHadamard block {self.block}: TE's fixed signs have 16 entries; "
                             f"pass a seed or signs")

    def sign_vector(self) -> torch.Tensor:
        if self.signs is not None:
            return torch.tensor(self.signs, dtype=torch.float32)
        if self.seed is None:
            return torch.tensor(TE_WGRAD_SIGNS, dtype=torch.float32)
        g = torch.Generator().manual_seed(int(self.seed))
        return torch.randint(0, 2, (self.block,), generator=g).float() * 2 - 1

    def matrix(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """H = (1/√n)·diag(s)·H_n."""
        n = self.block
        return (self.sign_vector().unsqueeze(1) * sylvester(n) * (1.0 / math.sqrt(n))).to(dtype)

    def apply(self, x: torch.Tensor, axis: int = -1, pad: bool = False) -> torch.Tensor:
        """x with every block of n consecutive elements along ``axis`` replaced by (block)·H (x's dtype);
        ``pad``: zero-pad the axis to a multiple of n first (the result is then longer)."""
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            raise TypeError(f"RandomHadamard.apply expects a floating-point tensor, got {type(x).__name__}")
        axis = axis % x.dim()
        length = x.shape[axis]
        if pad and length % self.block:
            widths = [0, 0] * (x.dim() - 1 - axis) + [0, self.block - length % self.block]
            x, length = torch.nn.functional.pad(x, widths), length + self.block - length % self.block
        if length % self.block:
            raise ValueError(f"RandomHadamard: the axis length {length} is not a multiple of the block {self.block}")
        work = torch.float64 if x.dtype == torch.float64 else torch.float32
        xw = x.to(work).contiguous()  # a plain copy at most: the blocks are rotated where they lie
        if xw.numel() == 0:
            return xw.to(x.dtype)
        g = layout.blocks(xw, axis, self.block)
        out = torch.empty_like(xw)
        s = _scaled_signs_on(self, work, x.device)
        if compiling.compile_enabled():  # at any size: eager, the butterfly is 3·log2(n) + 1 ops (150 µs at 2560)
            compiling.compiled(_fwht_into)(layout.blocks(out, axis, self.block), g, s)
        else:
            out.view(g.shape).copy_(fwht_stages(g, s))
        return out.to(x.dtype)


def fwht(g: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """(g ⊙ s)·H_n along dim 2 of g = (outer, nb, n, inner), s the signs times 1/√n as an (n, 1) column: the
    Sylvester-ordered fast Walsh–Hadamard transform, log2(n) butterfly stages (a, b) -> (a + b, a - b) on the pairs
    (i, i + h), h = 1, 2, 4, ..., written per block row so that a compiled graph is one pass (n loads, the butterfly
    in registers, n stores; built stage by stage through whole-tensor intermediates it took 2.2x as long). Each
    output is one fixed tree of float adds, so the bits do not depend on the layout or on a GEMM library's
    summation order (for n = 4^k the scaled signs ±2^-k make every product exact)."""
    n = g.shape[2]
    v = [g[:, :, j, :] * s[j] for j in range(n)]
    h = 1
    while h < n:
        w = list(v)
        for base in range(0, n, 2 * h):
            for i in range(base, base + h):
                w[i], w[i + h] = v[i] + v[i + h], v[i] - v[i + h]
        v, h = w, 2 * h
    return torch.stack(v, dim=2)


def fwht_stages(g: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """``fwht`` stage by stage over the whole tensor (the same pairs, so the same trees of adds and the same bits):
    the eager form, 3·log2(n) + 1 torch ops instead of ``fwht``'s n·(log2(n) + 1) (small tensors, compilation off)."""
    v = g * s
    outer, nb, n, inner = v.shape
    h = 1
    while h < n:
        v6 = v.view(outer, nb, n // (2 * h), 2, h, inner)
        a, b = v6[:, :, :, 0], v6[:, :, :, 1]
        v = torch.stack((a + b, a - b), dim=3).view(outer, nb, n, inner)
        h *= 2
    return v


def _fwht_into(out: torch.Tensor, g: torch.Tensor, s: torch.Tensor) -> None:
    out.copy_(fwht(g, s))


@functools.lru_cache(maxsize=64)
def _scaled_signs_on(rht: RandomHadamard, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """The signs times 1/√n (H = diag(that)·H_n) as an (n, 1) column on ``device``, built once (apply's hot path;
    read only: never handed to a caller)."""
    n = rht.block
    return (rht.sign_vector() * (1.0 / math.sqrt(n))).to(dtype).view(n, 1).to(device)
