"""Rounding modes and the seedable counter-based random bits used by stochastic rounding.

Modes (README.md, "Formats and rounding"):
  nearest     round to nearest, ties to even, in one step from the input
  away        round to nearest, ties away from zero
  zero        toward zero (truncate)
  up / down   toward +inf / toward -inf
  stochastic  round up with probability (x - RD(x)) / (RU(x) - RD(x)); with ``rand_bits=k`` it emulates hardware
              that adds k random bits below the kept LSB and truncates (Mellempudi et al. 2019 use k=8 for E5M2).

Random bits come from a keyed integer hash of the element index (a counter-based generator, like Philox in
spirit): the key is drawn from a ``torch.Generator`` (or torch's global generator), so results depend only on the
seed and the element's position, never on the thread count, and the bits can be generated inside a fused kernel.
"""
from __future__ import annotations

import torch

ROUNDING_MODES = ("nearest", "away", "zero", "up", "down", "stochastic")

MASK32 = 0xFFFFFFFF


def check_rounding(rounding: str) -> str:
    """Return ``rounding`` if it names a mode, else raise ValueError listing the valid ones."""
    if rounding not in ROUNDING_MODES:
        raise ValueError(f"unknown rounding mode {rounding!r}; valid modes: {', '.join(ROUNDING_MODES)}")
    return rounding


def check_rand_bits(rand_bits: int | None) -> int:
    """Number of random bits for stochastic rounding: None means 32 (exact whenever ≤ 32 bits are dropped)."""
    if rand_bits is None:
        return 32
    if isinstance(rand_bits, bool) or not isinstance(rand_bits, int) or not 1 <= rand_bits <= 32:
        raise ValueError(f"rand_bits must be an int in 1..32 (or None for 32), got {rand_bits!r}")
    return rand_bits


def draw_key(generator: torch.Generator | None = None) -> torch.Tensor:
    """Two 31-bit key words drawn from ``generator`` (or the global CPU generator) as an int64 tensor of shape (2,),
    on the generator's device. Kernels move the key to the data's device, so a seed gives the same random bits (and
    the same stochastic rounding) on the CPU and on CUDA; a CUDA generator is accepted too (another key stream)."""
    device = generator.device if generator is not None else None
    return torch.randint(0, 2**31 - 1, (2,), generator=generator, dtype=torch.int64, device=device)


def _mix32(h: torch.Tensor) -> torch.Tensor:
    """A 32-bit avalanche mixer ('lowbias32', Wellons) on int64 tensors holding values in [0, 2^32)."""
    h = h ^ (h >> 16)
    h = (h * 0x7FEB352D) & MASK32
    h = h ^ (h >> 15)
    h = (h * 0x846CA68B) & MASK32
    h = h ^ (h >> 16)
    return h


def hash_bits(index: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
    """Uniform 32-bit random words (int64 in [0, 2^32)) for each element ``index`` under ``key`` (shape (2,))."""
    h = _mix32((index & MASK32) ^ key[0])
    h = _mix32(h ^ key[1])
    return h


def _mix32_i32(h: torch.Tensor) -> torch.Tensor:
    """``_mix32`` on int32 tensors holding the 32-bit words as two's-complement bit patterns (wrapping multiplies,
    logical shifts by masking): the same bits at half the width, for the compiled kernels."""
    h = h ^ ((h >> 16) & 0xFFFF)
    h = h * 0x7FEB352D
    h = h ^ ((h >> 15) & 0x1FFFF)
    h = h * (0x846CA68B - (1 << 32))
    h = h ^ ((h >> 16) & 0xFFFF)
    return h


def hash_bits32(index: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
    """``hash_bits`` for int32 ``index`` (< 2^31), as int32 bit patterns: ``hash_bits32(i, k) & MASK32`` (in int64)
    equals ``hash_bits(i, k)``."""
    k = key.to(torch.int32)
    return _mix32_i32(_mix32_i32(index ^ k[0]) ^ k[1])


def random_bits(n: int, key: torch.Tensor, k: int = 32) -> torch.Tensor:
    """k-bit random integers (int64) for element positions 0..n-1: the top k bits of ``hash_bits``."""
    h = hash_bits(torch.arange(n, dtype=torch.int64), key)
    return h >> (32 - k)
