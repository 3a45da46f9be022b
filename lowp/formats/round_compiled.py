"""Float32-specialised kernels for the compiled fast paths (``dispatch.py``); the same results as the references.

``round_f32`` is ``round_reference.round_float`` for float32 input in int32 arithmetic (the int64 reference costs ~2x
more per element), the stochastic decision included. It also accepts per-element (broadcast) ``emin``/``maxval``, which is how the MX path rounds every
block on its own scaled grid without dividing by the scale: rounding x on the grid of the element format shifted
by 2^E is the same as rounding x / 2^E on the element grid and multiplying back (OCP MX v1.0 §6.3), with no
intermediate underflow. Where a shifted grid is finer than float32 (quantum < 2^-149) x is already on it.

``mx_scale`` + ``mx_round_into`` (MX with a FloatFormat element, blocks along the last axis of a contiguous tensor)
and ``int_scale`` + ``int_round_into`` (IntFormat per tensor: amax, scale fl32(amax/qmax), rounding of x/s in
float64 as the reference) complete the set. Random bits come from ``rounding.hash_bits32``, the int32 twin of the
reference hash (same bits); the stochastic decision is taken on 32-bit words without int64 arithmetic.
"""
from __future__ import annotations

import torch

from ..rounding import hash_bits32

I32 = torch.int32
INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1


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


def round_f32(x, man, emin, maxval, over_inf, saturate, subnormals, no_negzero, minnorm, *, mode: int = 0,
              rand_k=None, key=None, base=None):
    """float32 twin of ``round_reference.round_float`` (same arguments as int32/float32 tensors, but ``mode`` a Python
    int: each compiled graph serves one rounding mode and computes only its decision; ``base`` (int64 0-d) offsets
    the element index of the random bits)."""
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
    nz = rem != 0
    toward_zero = None  # modes whose overflow goes to +-max rather than +-Inf (directed toward zero)
    if mode == 0:  # nearest, ties to even
        half = (one << dc) >> 1
        up = (rem > half) | ((rem == half) & ((q & 1) == 1) & nz)
    elif mode == 1:  # nearest, ties away
        up = (rem >= ((one << dc) >> 1)) & nz
    elif mode == 2:  # toward zero
        up = torch.zeros_like(nz)
        toward_zero = True
    elif mode == 3:  # up
        up = nz & ~neg
        toward_zero = neg
    elif mode == 4:  # down
        up = nz & neg
        toward_zero = ~neg
    else:  # stochastic
        # carry iff r + rem_k >= 2^k (the reference's rule) in 32-bit words: align the remainder so that the kept
        # LSB sits at bit 32 (R), keep the top k bits of R and of the hash word H; then the carry happens iff
        # H + R >= 2^32 as unsigned words, i.e. H >u ~R, compared as signed after flipping the sign bits.
        idx = torch.arange(x.numel(), dtype=I32, device=x.device).view(x.shape) + base.to(I32)
        mask = torch.full_like(rand_k, -1, dtype=I32) << (32 - rand_k).to(I32)
        hword = hash_bits32(idx, key) & mask
        rword = torch.where(d <= 32, rem << torch.clamp(32 - d, 0, 31), rem >> torch.clamp(d - 32, 0, 31)) & mask
        up = (hword ^ INT32_MIN) > (rword ^ INT32_MAX)
    q = q + up.to(I32)
    r = q.to(torch.float32) * pow2_f32(ex0 - 23 + d)
    # overflow and +-Inf inputs: one 0-d value each (saturate / over_inf are 0-d), per element only when the
    # mode's direction depends on the sign
    ovf = torch.where(over_inf == 1, float("inf"), torch.where(over_inf == 2, float("nan"), maxval))
    inf_val = torch.where(saturate, maxval, ovf)
    if toward_zero is True:
        over_val = maxval
    elif toward_zero is None:
        over_val = inf_val
    else:
        over_val = torch.where(toward_zero, maxval, inf_val)
    r = torch.where(r > maxval, over_val, r)
    r = torch.where((subnormals == 0) & (r < minnorm), 0.0, r)
    r = torch.where(is_inf, inf_val, r)
    negate = neg & ~((no_negzero != 0) & (r == 0))
    r = torch.where(negate, -r, r)
    return torch.where(is_nan, x, r)


def float_into(out, x, man, emin, maxval, over_inf, saturate, subnormals, no_negzero, minnorm, *, mode: int = 0,
               rand_k=None, key=None):
    """out[:] = round_f32(x) for flat float32 x and out (the compiled graph writes straight into ``out``)."""
    out.copy_(round_f32(x, man, emin, maxval, over_inf, saturate, subnormals, no_negzero, minnorm, mode=mode,
                        rand_k=rand_k, key=key, base=torch.zeros((), dtype=torch.int64, device=x.device)))


def mx_scale(g, emax):
    """The shared exponent E per row of g (rows = blocks, float32): clamp(floor(log2 amax) - emax, -127, 127),
    -127 (2^-127) for a block of zeros; non-finite elements do not count. Shape (rows, 1), int32."""
    a = torch.where(torch.isfinite(g), g.abs(), torch.zeros_like(g)).amax(dim=-1, keepdim=True)
    e = torch.where(a > 0, floor_log2_f32(a) - emax, torch.full_like(a, -127, dtype=I32))
    return torch.clamp(e, -127, 127)


def mx_round_into(out, g, e, man, emin, maxval, no_negzero, *, mode: int = 0, rand_k=None, key=None):
    """MX elements: round each row of g on the element grid shifted by its 2^E (``e`` from ``mx_scale``),
    saturating; NaN and +-Inf pass through. Kept apart from ``mx_scale``: fused into one kernel, inductor loops
    over each 32-element block with per-block setup and runs several times slower."""
    one = torch.ones((), dtype=I32, device=g.device)
    y = round_f32(g, man, emin + e, maxval * pow2_f32(e), torch.zeros((), dtype=I32, device=g.device),
                  torch.ones((), dtype=torch.bool, device=g.device), one, no_negzero,
                  torch.zeros((), dtype=torch.float32, device=g.device),
                  mode=mode, rand_k=rand_k, key=key, base=torch.zeros((), dtype=torch.int64, device=g.device))
    out.copy_(torch.where(torch.isinf(g), g, y))


def int_scale(x, qmax):
    """Per-tensor IntFormat scale on flat float32 x: max(fl32(amax / qmax), 2^-149), 1 if amax == 0 (non-finite
    values ignored)."""
    a = torch.where(torch.isfinite(x), x.abs(), torch.zeros_like(x)).amax()
    s = torch.clamp(a / qmax.to(torch.float32), min=2.0**-149)
    return torch.where(a > 0, s, torch.ones_like(s))


def int_round_into(out, x, s, qmax, *, mode: int = 0, rand_k=None, key=None):
    """out = fl32(clamp(round(x / s), +-qmax) * s) with x / s in float64 (exact enough to decide every tie, as
    the reference); a zero keeps the sign of x; NaN stays NaN. A separate graph from ``int_scale`` for the same
    reason as MX. Written with float64 arithmetic only (no boolean algebra on float64 comparisons, which inductor
    lowers to slow mask conversions): ties away as floor(|v| + 1/2) with v's sign, exact for |v| < 2^51."""
    s = s.to(torch.float64)
    v = x.to(torch.float64) / s
    if mode == 0:
        q = torch.round(v)
    elif mode == 1:
        q = torch.copysign(torch.floor(v.abs() + 0.5), v)
    elif mode == 2:
        q = torch.trunc(v)
    elif mode == 3:
        q = torch.ceil(v)
    elif mode == 4:
        q = torch.floor(v)
    else:  # carry iff r + floor(frac 2^k) >= 2^k: the 32-bit word test of ``round_f32``
        f = torch.floor(v)
        frac = v - f
        # frac rounds to 1.0 for tiny negative v (v - floor(v) in float64): the reference then always carries
        whole = frac >= 1.0
        f = torch.where(whole, f + 1.0, f)
        frac = torch.where(whole, torch.zeros_like(frac), frac)
        idx = torch.arange(x.numel(), dtype=I32, device=x.device)
        mask = torch.full_like(rand_k, -1, dtype=I32) << (32 - rand_k).to(I32)
        hword = hash_bits32(idx, key) & mask
        # floor(frac 2^32) - 2^31 converts to int32 exactly and is (its word ^ INT32_MIN); the mask keeps the sign
        fbiased = (torch.floor(frac * 4294967296.0) - 2147483648.0).to(I32) & mask
        carry = torch.where((hword ^ INT32_MIN) > ~fbiased, 1.0, 0.0).to(torch.float64)
        q = torch.copysign(f + carry, v)
    qm = qmax.to(torch.float64)
    q = torch.minimum(torch.maximum(q, -qm), qm)
    y = (q * s).to(torch.float32)
    out.copy_(torch.where(torch.isnan(x), x, y))


def amax_scale_f32(x, fmt_max, pow_margin):
    """Per-tensor current scaling on flat float32 x, as ``scaling.amax_scale``: s = (fmt_max / amax) / 2^margin in
    float64, at most 2^127, 1 where amax is 0 or not finite (a NaN in x propagates into amax), rounded to float32."""
    a = x.abs().amax().to(torch.float64)
    s = torch.clamp((fmt_max / a) / pow_margin, max=2.0**127)
    return torch.where(torch.isfinite(a) & (a > 0), s, torch.ones_like(s)).to(torch.float32)


def scaled_float_into(out, x, s, man, emin, maxval, over_inf, saturate, subnormals, no_negzero, minnorm, *,
                      mode: int = 0, rand_k=None, key=None):
    """out = Q(x·s) / s in float32 (the scaled rounding of ``ops.context``: one multiply, one rounding, one divide)."""
    q = round_f32(x * s, man, emin, maxval, over_inf, saturate, subnormals, no_negzero, minnorm, mode=mode,
                  rand_k=rand_k, key=key, base=torch.zeros((), dtype=torch.int64, device=x.device))
    out.copy_(q / s)
