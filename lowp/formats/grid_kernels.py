"""Round-to-nearest-even and stochastic rounding of float32 onto one float grid, the grid's constants as Python ints
(baked into each compiled graph), and a block amax without NaN in its reduction (``finite_row_max``): the building
blocks of the compiled NVFP4 and MX kernels (``nvfp4_compiled.py``, ``mx_compiled.py``; the FP8 blockwise kernels use
``rn``). The roundings give the bits of the general kernel (``float_kernel.round_float`` /
``fast_kernels.round_f32``) on |v| <= the grid's largest binade, without its overflow handling (callers clamp or
saturate after).

For float32 v, a = |v|, a grid with m mantissa bits (sh = 23 - m dropped bits) and smallest normal 2^emin:
  nearest     a >= 2^emin: add-and-mask on the bit pattern, bits(a) + 2^(sh-1) - 1 + lsb, low sh bits cleared;
              a <  2^emin: magic-number add (a + C) - C, C = 2^(emin - m + 23) (``round_short_compiled.py``)
  stochastic  k random bits: H = the top k bits of the element's 32-bit hash word (``rounding.hash_bits32`` of its
              flat index under ``key``), R = the dropped remainder aligned below the kept bit as a 32-bit word, cut to
              its top k bits; carry iff H + R >= 2^32 (the general kernel's rule). a >= 2^emin: the top sh bits of H
              added to the bits (remainder cut first), then the mask; a < 2^emin: on the grid a·2^(m - emin) = q + f,
              R = floor(f·2^32) built exactly from two 16-bit halves.
Both need 2^(emin - m) >= 2^-149 and m <= 22; NaN passes through, the sign is put back as a bit.
"""
from __future__ import annotations

import torch

from ..rounding import hash_bits32

I32, F32 = torch.int32, torch.float32
INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1


def _finish(v, u, mag, r):
    rb = r.view(I32) | (u & INT32_MIN)
    return torch.where(mag > 0x7F800000, v, rb.view(F32))


def rn(v: torch.Tensor, man: int, emin: int) -> torch.Tensor:
    """v rounded to nearest-even on the grid (module docstring)."""
    sh = 23 - man
    u = v.view(I32)
    mag = u & 0x7FFFFFFF
    magc = torch.clamp(mag, max=0x7F800000)
    a = mag.view(F32)
    near = ((magc + (((1 << (sh - 1)) - 1) + ((magc >> sh) & 1))) & -(1 << sh)).view(F32)
    magic = 2.0 ** (emin - man + 23)
    r = torch.where(a < 2.0**emin, (a + magic) - magic, near)
    return _finish(v, u, mag, r)


def sr(v: torch.Tensor, man: int, emin: int, rand_k: torch.Tensor, key: torch.Tensor,
       idx: torch.Tensor | None = None) -> torch.Tensor:
    """v rounded stochastically on the grid with ``rand_k`` (0-d int) random bits per element under ``key``; the
    random bits of an element are those of its ``idx`` (int32, v's shape; default: its flat index in v)."""
    sh = 23 - man
    u = v.view(I32)
    mag = u & 0x7FFFFFFF
    magc = torch.clamp(mag, max=0x7F800000)
    a = mag.view(F32)
    k = rand_k.to(I32)
    hmask = torch.full_like(k, -1) << (32 - k)
    if idx is None:
        idx = torch.arange(v.numel(), dtype=I32, device=v.device).view(v.shape)
    h = hash_bits32(idx, key) & hmask
    cut = torch.full_like(k, -1) << torch.clamp(sh - k, min=0)
    normal = (((magc & cut) + ((h >> (32 - sh)) & ((1 << sh) - 1))) & -(1 << sh)).view(F32)
    up = man - emin  # a·2^up puts the subnormal quantum at 1 (two exact steps: up may exceed 127)
    a_s = (a * 2.0 ** (up // 2)) * 2.0 ** (up - up // 2)
    qf = torch.floor(a_s)
    f16 = (a_s - qf) * 65536.0
    hi = torch.floor(f16)
    lo = torch.floor((f16 - hi) * 65536.0)
    rword = ((hi.to(I32) << 16) | lo.to(I32)) & hmask
    carry = (h ^ INT32_MIN) > (rword ^ INT32_MAX)
    r = torch.where(a < 2.0**emin, (qf + carry.to(F32)) * 2.0 ** (emin - man), normal)
    return _finish(v, u, mag, r)


def finite_row_max(g, mask: int):
    """max along the last axis of g (keepdim) of the elements' bit patterns cut to ``mask`` (0x7FFFFFFF: |g|;
    0x7F800000: the binade), non-finite elements counted as 0, as float32. The patterns are non-negative finite
    floats, so their integer and float orders agree and no NaN enters the reduction: a row of n = 8k elements is
    first folded to 8 lanes by k - 1 elementwise integer maxima (whole vectors), then reduced across the 8 as floats
    (inductor's horizontal max, NaN-propagating, on one vector per block instead of k): 1.4-1.8x the MX kernel's
    speed at blocks of 32 against a masked float amax. Other row lengths reduce directly."""
    m = g.view(I32) & mask
    m = torch.where(m >= 0x7F800000, torch.zeros_like(m), m)
    n = g.shape[-1]
    if n % 8 == 0 and n > 8:
        lanes = m.view(*m.shape[:-1], n // 8, 8)
        m = lanes[..., 0, :]
        for i in range(1, n // 8):
            m = torch.maximum(m, lanes[..., i, :])
    return m.view(F32).amax(dim=-1, keepdim=True)


def element_constants(el) -> tuple[str, dict]:
    """(tag, keywords) of FloatFormat ``el`` for ``saturated`` and the kernels built on ``rn``/``sr``: the grid
    (man, emin), the saturation bound, and the flush/fnuz policy; the tag names them (a compiled copy bakes its own:
    ``compiling.with_constants``)."""
    tag = f"{el.name}_{el.exp}_{el.man}_{el.bias}_{el.special}_{int(el.subnormals)}".replace("-", "_")
    return tag, dict(man=el.man, emin=el.emin, maxval=float(el.max), minnorm=float(el.min_normal),
                     subnormals=bool(el.subnormals), fnuz=el.special == "fnuz")


def saturated(r: torch.Tensor, *, maxval: float, minnorm: float, subnormals: bool, fnuz: bool) -> torch.Tensor:
    """A grid-rounded r clamped to ±maxval, flushed (sign kept) below the smallest normal for a grid without
    subnormals, fnuz's -0 -> +0."""
    r = torch.clamp(r, -maxval, maxval)
    if not subnormals:
        r = torch.where(r.abs() < minnorm, r * 0.0, r)
    if fnuz:
        r = torch.where(r == 0, torch.zeros_like(r), r)
    return r
