"""Random Hadamard transform (RHT) in blocks along one axis (TE NVFP4 recipe; Quartet, Castro et al. 2025).

H = (1/√n)·diag(s)·H_n with H_n the Sylvester Hadamard matrix (H_1 = [1], H_2k = [[H_k, H_k], [H_k, -H_k]]) and
s a ±1 sign vector; a block v (a row vector of n consecutive elements along ``axis``) becomes v·H. H is orthogonal
(H·Hᵀ = (1/n)·diag(s)·H_n·H_nᵀ·diag(s) = I), so rotating both operands of a GEMM along its reduction axis leaves
the product unchanged in exact arithmetic: (A·H)(B·H)ᵀ = A·Bᵀ; it spreads outliers over the block before
quantization (amax is taken after the rotation). For n = 16 (TE's default) the entries are exactly ±1/4; for n a
power of 4 they are exact powers of two, otherwise 1/√n is rounded to float32 and H·Hᵀ = I holds only to rounding.

Signs: ``seed=None`` uses TE's fixed 16-entry wgrad sign vector (``get_wgrad_sign_vector`` in TE's NVFP4
reference); an int ``seed`` draws the n signs from ``torch.Generator().manual_seed(seed)`` (reproducible);
``signs`` gives them explicitly. The transform runs in float32 (torch.matmul of each block with H), as the
references do. The axis length must be a multiple of n (TE refuses other lengths too), unless ``pad=True``: then the
axis is first zero-padded to the next multiple of n, so the result is longer. Rotating both operands of a GEMM
that way leaves the product unchanged ((H·[a; 0])ᵀ(H·[g; 0]) = aᵀg: the padded rows add nothing), which is how
lowp's ops treat a reduction that is not a multiple of the block (e.g. a last or dry-run batch of 2 samples).
"""
from __future__ import annotations

import dataclasses
import functools
import math

import torch

from . import layout

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
        xt = layout.axis_last(x.to(work), axis)  # a compiled transposition where it can be (layout.py)
        y = xt.reshape(-1, self.block) @ _matrix_on(self, work, x.device)
        return layout.contiguous(y.reshape(xt.shape).movedim(-1, axis)).to(x.dtype)


@functools.lru_cache(maxsize=64)
def _matrix_on(rht: RandomHadamard, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``rht.matrix(dtype)`` on ``device``, built once (apply's hot path; read only: never handed to a caller)."""
    return rht.matrix(dtype).to(device)
