"""The rounding kernel shared by every float-like format: integer operations on IEEE bit patterns.

For an input x (float32 or float64) with significand ``sig`` (implicit bit included) and exponent ``ex``,
the target quantum is 2^k with k = max(ex, emin) - m, so the number of dropped bits is
d = (MB - m) + max(0, emin - ex). The kept integer q = sig >> d is incremented by the rounding decision
taken from the dropped remainder ``rem``; the result q·2^k is built exactly (q and 2^k are both exact in the
input dtype), so there is one rounding step and no detour through another format.

All parameters are tensors, so one compiled graph serves every format (see ``dispatch.py``); the same function
runs eagerly as the reference path.
"""
from __future__ import annotations

import torch

from ..rounding import hash_bits

# integer codes of the rounding modes inside the kernel
MODE_CODE = {"nearest": 0, "away": 1, "zero": 2, "up": 3, "down": 4, "stochastic": 5}

# input dtypes: (int view dtype, mantissa bits, exponent bias)
_INPUT = {
    torch.float32: (torch.int32, 23, 127),
    torch.float64: (torch.int64, 52, 1023),
}


def pow2(k: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Exact 2^k (k int64 tensor) in ``dtype`` for k down to the dtype's smallest subnormal exponent."""
    ity, mb, eb = _INPUT[dtype]
    normal = (k + eb) << mb
    sub = torch.ones_like(k) << torch.clamp(k + eb - 1 + mb, min=0)
    bits = torch.where(k >= 1 - eb, normal, sub)
    return bits.to(ity).view(dtype)


def round_float(
    x: torch.Tensor,
    man: torch.Tensor,
    emin: torch.Tensor,
    maxval: torch.Tensor,
    minnorm: torch.Tensor,
    mode: torch.Tensor,
    over_inf: torch.Tensor,
    saturate: torch.Tensor,
    subnormals: torch.Tensor,
    no_negzero: torch.Tensor,
    rand: torch.Tensor | None = None,
    rand_k: torch.Tensor | None = None,
    key: torch.Tensor | None = None,
) -> torch.Tensor:
    """Round float32/float64 ``x`` (any shape) onto a float grid; returns a new tensor of x's dtype.

    man, emin: mantissa bits and minimum normal exponent of the target; maxval/minnorm: its largest finite and
    smallest normal magnitude (in x's dtype). mode: a MODE_CODE. over_inf: 1 if a non-saturating overflow
    gives ±Inf, 2 if it gives NaN, 0 if it gives ±max. saturate: overflow and ±Inf go to ±max.
    subnormals: 0 flushes results below minnorm to zero. no_negzero: -0 becomes +0 (fnuz).
    For mode 5 (stochastic): ``rand`` holds rand_k-bit random integers per element (int64, same shape), or
    ``key`` (shape (2,)) generates them from the element index by ``rounding.hash_bits``.
    """
    dtype = x.dtype
    ity, mb, eb = _INPUT[dtype]
    u = x.view(ity).to(torch.int64)
    neg = u < 0
    mag = u & (0x7FFFFFFF if ity == torch.int32 else 0x7FFFFFFFFFFFFFFF)
    efield = mag >> mb
    emax_field = 2 * eb + 1
    is_nan = efield == emax_field
    is_nan = is_nan & ((mag & ((1 << mb) - 1)) != 0)
    is_inf = (efield == emax_field) & ~is_nan
    ex0 = torch.clamp(efield, min=1) - eb  # sig's scale: x = sig * 2^(ex0 - mb)
    sig = (mag & ((1 << mb) - 1)) | ((efield > 0).to(torch.int64) << mb)
    # the true exponent floor(log2|x|), also for input subnormals (matters when the target's emin < 1 - eb):
    # sig < 2^mb converts exactly to float64, whose exponent field gives its bit length
    sub_ex = ((sig.to(torch.float64).view(torch.int64) >> 52) - 1023) + (ex0 - mb)
    ex = torch.where(efield > 0, ex0, sub_ex)
    d = torch.maximum(ex, emin) - man - (ex0 - mb)  # dropped bits, >= 0 (the format's quantum >= the input's)
    dc = torch.clamp(d, max=mb + 2)
    q = sig >> dc
    rem = sig & ((torch.ones_like(dc) << dc) - 1)
    half = (torch.ones_like(dc) << dc) >> 1
    nz = rem != 0
    up_near = (rem > half) | ((rem == half) & ((q & 1) == 1) & nz)
    up_away = (rem >= half) & nz
    up = torch.where(mode == 0, up_near, torch.where(mode == 1, up_away, torch.zeros_like(nz)))
    up = torch.where(mode == 3, nz & ~neg, up)
    up = torch.where(mode == 4, nz & neg, up)
    if rand is not None or key is not None:
        kk = rand_k
        if rand is None:
            idx = torch.arange(x.numel(), dtype=torch.int64, device=x.device).view(x.shape)
            rand = hash_bits(idx, key) >> (32 - kk)
        # top kk bits of the remainder, aligned below the kept LSB: carry iff rand + rem_k >= 2^kk
        sh = d - kk
        rem_k = torch.where(sh >= 0, rem >> torch.clamp(sh, 0, 63), rem << torch.clamp(-sh, 0, 63))
        up_sto = (rand + rem_k) >= (torch.ones_like(kk) << kk)
        up = torch.where(mode == 5, up_sto, up)
    q = q + up.to(torch.int64)
    k = torch.maximum(ex, emin) - man
    r = q.to(dtype) * pow2(k, dtype)
    over = r > maxval
    toward_zero = (mode == 2) | ((mode == 4) & ~neg) | ((mode == 3) & neg)
    inf = torch.full_like(r, float("inf"))
    nan = torch.full_like(r, float("nan"))
    over_val = torch.where(over_inf == 1, inf, torch.where(over_inf == 2, nan, maxval.expand_as(r)))
    over_val = torch.where(saturate | toward_zero, maxval.expand_as(r), over_val)
    r = torch.where(over, over_val, r)
    r = torch.where((subnormals == 0) & (r < minnorm), torch.zeros_like(r), r)
    inf_val = torch.where(over_inf == 1, inf, torch.where(over_inf == 2, nan, maxval.expand_as(r)))
    inf_val = torch.where(saturate, maxval.expand_as(r), inf_val)
    r = torch.where(is_inf, inf_val, r)
    negate = neg & ~((no_negzero != 0) & (r == 0))
    r = torch.where(negate, -r, r)
    return torch.where(is_nan, x, r)
