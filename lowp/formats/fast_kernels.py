"""Float32-specialised kernels for the compiled fast paths (``fast.py``); the same results as the references.

``round_f32`` is ``float_kernel.round_float`` for float32 input in int32 arithmetic (the int64 reference costs ~2x
more per element); only the stochastic decision uses int64 (the 32-bit hash and its k-bit comparison, exactly as
the reference). It also accepts per-element (broadcast) ``emin``/``maxval``, which is how the MX path rounds every
block on its own scaled grid without dividing by the scale: rounding x on the grid of the element format shifted
by 2^E is the same as rounding x / 2^E on the element grid and multiplying back (OCP MX v1.0 §6.3), with no
intermediate underflow. Where a shifted grid is finer than float32 (quantum < 2^-149) x is already on it.

``mx_f32`` (MX with a FloatFormat element, blocks along the last axis of a contiguous tensor) and ``int_f32``
(IntFormat per tensor: amax, scale fl32(amax/qmax), rounding of x/s in float64 as the reference) complete the set.
"""
from __future__ import annotations

import torch

from ..rounding import hash_bits

I32 = torch.int32


def pow2_f32(k: torch.Tensor) -> torch.Tensor:
    """Exact 2^k as float32 for int32 k in [-149, 127]."""
    normal = (k + 127) << 23
    sub = torch.ones_like(k) << torch.clamp(k + 149, min=0)
    return torch.where(k >= -126, normal, sub).view(torch.float32)


def floor_log2_f32(a: torch.Tensor) -> torch.Tensor:
    """floor(log2 a) (int32) for positive finite float32 a, subnormals included (garbage for a == 0)."""
    bits = a.view(I32)
    efield = bits >> 23
    frac = bits & 0x7FFFFF
    sub = ((frac.to(torch.float32).view(I32) >> 23) - 127) - 149  # frac < 2^23 converts exactly
    return torch.where(efield > 0, efield - 127, sub)


def round_f32(x, man, emin, maxval, mode, over_inf, saturate, subnormals, no_negzero, minnorm,
              rand_k=None, key=None, base=None):
    """float32 twin of ``float_kernel.round_float`` (same arguments as int32/float32 tensors; ``base`` (int64 0-d)
    offsets the element index of the random bits)."""
    u = x.view(I32)
    neg = u < 0
    mag = u & 0x7FFFFFFF
    efield = mag >> 23
    is_nan = mag > 0x7F800000
    is_inf = mag == 0x7F800000
    ex0 = torch.clamp(efield, min=1) - 127
    frac = mag & 0x7FFFFF
    sig = frac | ((efield > 0).to(I32) << 23)
    sub_ex = ((frac.to(torch.float32).view(I32) >> 23) - 127) - 149
    ex = torch.where(efield > 0, ex0, sub_ex)
    d = torch.clamp(torch.maximum(ex, emin) - man - (ex0 - 23), min=0)
    dc = torch.clamp(d, max=25)
    one = torch.ones_like(dc)
    q = sig >> dc
    rem = sig & ((one << dc) - 1)
    half = (one << dc) >> 1
    nz = rem != 0
    up_near = (rem > half) | ((rem == half) & ((q & 1) == 1) & nz)
    up_away = (rem >= half) & nz
    up = torch.where(mode == 0, up_near, torch.where(mode == 1, up_away, torch.zeros_like(nz)))
    up = torch.where(mode == 3, nz & ~neg, up)
    up = torch.where(mode == 4, nz & neg, up)
    if key is not None:
        idx = (torch.arange(x.numel(), dtype=torch.int64, device=x.device) + base).view(x.shape)
        kk = rand_k
        r = hash_bits(idx, key) >> (32 - kk)
        sh = d.to(torch.int64) - kk
        rem64 = rem.to(torch.int64)
        rem_k = torch.where(sh >= 0, rem64 >> torch.clamp(sh, 0, 63), rem64 << torch.clamp(-sh, 0, 63))
        up = torch.where(mode == 5, (r + rem_k) >= (torch.ones_like(kk) << kk), up)
    q = q + up.to(I32)
    r = q.to(torch.float32) * pow2_f32(ex0 - 23 + d)
    over = r > maxval
    toward_zero = (mode == 2) | ((mode == 4) & ~neg) | ((mode == 3) & neg)
    inf = torch.full_like(r, float("inf"))
    nan = torch.full_like(r, float("nan"))
    mv = maxval.expand_as(r)
    over_val = torch.where(over_inf == 1, inf, torch.where(over_inf == 2, nan, mv))
    over_val = torch.where(saturate | toward_zero, mv, over_val)
    r = torch.where(over, over_val, r)
    r = torch.where((subnormals == 0) & (r < minnorm), torch.zeros_like(r), r)
    inf_val = torch.where(over_inf == 1, inf, torch.where(over_inf == 2, nan, mv))
    inf_val = torch.where(saturate, mv, inf_val)
    r = torch.where(is_inf, inf_val, r)
    negate = neg & ~((no_negzero != 0) & (r == 0))
    r = torch.where(negate, -r, r)
    return torch.where(is_nan, x, r)


def float_into(out, x, man, emin, maxval, mode, over_inf, saturate, subnormals, no_negzero, minnorm,
               rand_k=None, key=None):
    """out[:] = round_f32(x) for flat float32 x and out (the compiled graph writes straight into ``out``)."""
    out.copy_(round_f32(x, man, emin, maxval, mode, over_inf, saturate, subnormals, no_negzero, minnorm,
                        rand_k, key, torch.zeros((), dtype=torch.int64)))


def mx_into(out, x, block, man, emin, emax, maxval, no_negzero, mode, rand_k=None, key=None):
    """MX with a float element: x, out flat float32 with numel % block == 0, blocks of consecutive elements.
    E = clamp(floor(log2 amax) - emax, -127, 127) (2^-127 for a block of zeros); elements saturate; NaN and
    +-Inf pass through."""
    g = x.view(-1, block)
    a = torch.where(torch.isfinite(g), g.abs(), torch.zeros_like(g)).amax(dim=-1, keepdim=True)
    e = torch.where(a > 0, floor_log2_f32(a) - emax, torch.full_like(a, -127, dtype=I32))
    e = torch.clamp(e, -127, 127)
    one = torch.ones((), dtype=I32)
    y = round_f32(g, man, emin + e, maxval * pow2_f32(e), mode, torch.zeros((), dtype=I32),
                  torch.ones((), dtype=torch.bool), one, no_negzero, torch.zeros((), dtype=torch.float32),
                  rand_k, key, torch.zeros((), dtype=torch.int64))
    out.copy_(torch.where(torch.isinf(g), g, y).view(-1))


def int_into(out, x, qmax, mode, rand_k=None, key=None):
    """IntFormat per tensor on flat float32 x: s = fl32(amax / qmax) (1 if amax == 0), q = round(x / s) in
    float64, clamped to +-qmax, out = fl32(q * s); NaN stays NaN."""
    a = torch.where(torch.isfinite(x), x.abs(), torch.zeros_like(x)).amax()
    s = a / qmax.to(torch.float32)
    s = torch.where(a > 0, s, torch.ones_like(s)).to(torch.float64)
    v = x.to(torch.float64) / s
    f = torch.floor(v)
    frac = v - f
    near = torch.round(v)
    away = torch.where((frac > 0.5) | ((frac == 0.5) & (v > 0)), f + 1, f)
    q = torch.where(mode == 0, near, torch.where(mode == 1, away, torch.where(
        mode == 2, torch.trunc(v), torch.where(mode == 3, torch.ceil(v), f))))
    if key is not None:
        idx = torch.arange(x.numel(), dtype=torch.int64, device=x.device)
        r = hash_bits(idx, key) >> (32 - rand_k)
        top = torch.floor(frac * (torch.ones_like(rand_k) << rand_k).to(torch.float64)).to(torch.int64)
        q = torch.where(mode == 5, torch.where((r + top) >= (torch.ones_like(rand_k) << rand_k), f + 1, f), q)
    qm = qmax.to(torch.float64)
    q = torch.minimum(torch.maximum(q, -qm), qm)
    y = (q * s).to(torch.float32)
    out.copy_(torch.where(torch.isnan(x), x, y))
