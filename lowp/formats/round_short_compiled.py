"""Format-specialised short paths of the float32 rounding kernel: round to nearest (ties to even) or stochastically
on one format's grid, with the format's constants written into the kernel as literals, one compiled graph per
(format, saturate, variant, rounding, random bits). They give the bits of the general kernel
(``round_reference.round_float``; tests compare them on every rounding-relevant bit pattern class of every registered
float format) at a third to a half of its cost.

For float32 v, |v| = a, a target with m mantissa bits (sh = 23 - m dropped bits) and smallest normal 2^emin >= 2^-126:

    a >= 2^emin   add-and-mask on the bit pattern: (bits(a) + 2^(sh-1) - 1 + lsb) & ~(2^sh - 1), lsb the kept
                  last bit (ties to even; a carry moves into the exponent field, which is the right result)
    a <  2^emin   magic-number add: (a + C) - C with C = 2^(emin - m + 23), whose float32 quantum is the
                  target's subnormal quantum 2^(emin - m), so float32's own round-to-nearest-even does the work

Stochastic rounding with k random bits (the general kernel's hash of the element index under a drawn key): for
a >= 2^emin the top bits of the masked hash word are added below the kept bits (the remainder cut to its top k bits
first) before the mask; below, on the integer grid a·2^(m - emin) = q + f, the result rounds up iff
(top k bits of the hash) + floor(f·2^k) >= 2^k, which is the general kernel's rule.

Then overflow (r > max: ±Inf, NaN or ±max by the format's policy and ``saturate``), the flush of results below the
smallest normal for formats without subnormals, the sign put back as a bit, fnuz's -0 -> +0, NaN passed through —
in the general kernel's order. Variants: ``plain`` Q(x); ``scaled`` Q(x·s)/s for a given 0-d scale;
``current`` the per-tensor current scale s = (max / amax(x)) / 2^margin (``scaling.amax_scale``) computed in the
same graph (and written to a 0-d output), then Q(x·s)/s.

Formats outside the short path's reach (m = 23, or emin < -126, where float32 subnormals sit inside the target's
normal range) and the directed rounding modes use the general kernel.
"""
from __future__ import annotations

import linecache
import math
import re
import threading

import torch

from ..rounding import hash_bits32
from . import compiling as _compiling
from .float import FloatFormat

VARIANTS = ("plain", "scaled", "current")
ROUNDINGS = ("nearest", "stochastic")

_TEMPLATE = '''\
def {name}(out, x{arg}):
{pre}
    u = v.view(I32)
    mag = u & 0x7FFFFFFF
    magc = torch.clamp(mag, max=0x7F800000)
    a = mag.view(F32)
{rounding}
    r = torch.where(r > {maxval!r}, {inf_val}, r)
{flush}
    rb = r.view(I32) | (u & {sign})
{negzero}
    q = torch.where(mag > 0x7F800000, v, rb.view(F32))
    out.copy_(q{post})
'''

_NEAREST = """\
    rn = ((magc + ({half_m1} + ((magc >> {sh}) & 1))) & {keep}).view(F32)
    r = torch.where(a < {sub_below!r}, (a + {magic!r}) - {magic!r}, rn)"""

# stochastic, k random bits per element (the hash of the element index, as the general kernel): normal range, add
# the top sh bits of the masked hash word to the bits (the remainder cut to its top k bits first) and mask; target
# subnormals, on the integer grid a·2^(m - emin) = q + f: round up iff (top k bits of the hash) + floor(f·2^k) >= 2^k
_STOCHASTIC = """\
    h = hash_bits32(torch.arange(x.numel(), dtype=I32, device=x.device), key) & {hmask}
    rn = (((magc & {cut}) + ((h >> {hshift}) & {lowmask})) & {keep}).view(F32)
    a_s = (a * {up1!r}) * {up2!r}
    qf = torch.floor(a_s)
    fk = torch.floor((a_s - qf) * {two_k!r})
{decide}
    r = torch.where(a < {sub_below!r}, (qf + up.to(F32)) * {quantum!r}, rn)"""
_DECIDE_F32 = "    up = (fk + ((h >> {kshift}) & {kmask}).to(F32)) >= {two_k!r}"  # exact for k <= 24
_DECIDE_I64 = "    up = (fk.to(torch.int64) + ((h.to(torch.int64) & 0xFFFFFFFF) >> {kshift})) >= {two_k_int}"

_PRE = {
    "plain": ("", "    v = x", ""),
    "scaled": (", s", "    v = x * s", " / s"),
    # the scale is computed once: ``compiling.materialised`` (the max of 16 copies of itself, a buffer inductor
    # writes) before the rounding loop reads it; read from ``s`` or from the pointwise expression, inductor inlines
    # the float64 arithmetic into every vector of that loop (a third of the kernel's time at 2^17 elements)
    "current": (", s", "    a0 = x.abs().amax().to(torch.float64)\n"
                       "    sc = torch.clamp(({fmt_max!r} / a0) / {pow_margin!r}, max=2.0 ** 127)\n"
                       "    sf = torch.where(torch.isfinite(a0) & (a0 > 0), sc, torch.ones_like(sc)).to(F32)\n"
                       "    s.copy_(sf)\n"
                       "    sf = materialised(sf)\n"
                       "    v = x * sf", " / sf"),
}

_lock = threading.Lock()
_kernels: dict[tuple, object] = {}  # the generated Python kernels (eager); compiled: compiling's cache


def supported(fmt, rounding: str) -> bool:
    """Whether (fmt, rounding) has a short path: a FloatFormat rounded to nearest-even or stochastically,
    0 <= m <= 22, emin >= -126."""
    return (rounding in ROUNDINGS and isinstance(fmt, FloatFormat) and fmt.man <= 22 and fmt.emin >= -126)


def _float_literal(v: float) -> str:
    if math.isnan(v):
        return 'float("nan")'
    if math.isinf(v):
        return 'float("inf")'
    return repr(float(v))


def _rounding_block(fmt: FloatFormat, rounding: str, rand_bits: int) -> str:
    sh = 23 - fmt.man
    if rounding == "nearest":
        return _NEAREST.format(sh=sh, half_m1=(1 << (sh - 1)) - 1, keep=-(1 << sh),
                               sub_below=math.ldexp(1.0, fmt.emin), magic=math.ldexp(1.0, fmt.emin - fmt.man + 23))
    k = rand_bits
    if not (isinstance(k, int) and 1 <= k <= 32):
        raise ValueError(f"rand_bits must be an int in 1..32, got {k!r}")
    up = fmt.man - fmt.emin  # a·2^up puts the target's subnormal quantum at 1 (two exact steps: up may exceed 127)
    decide = (_DECIDE_F32.format(kshift=32 - k, kmask=(1 << k) - 1, two_k=float(2**k)) if k <= 24 else
              _DECIDE_I64.format(kshift=32 - k, two_k_int=2**k))
    return _STOCHASTIC.format(hmask=-(1 << (32 - k)) if k < 32 else -1, cut=-(1 << max(sh - k, 0)),
                              hshift=32 - sh, lowmask=(1 << sh) - 1, keep=-(1 << sh), up1=math.ldexp(1.0, up // 2),
                              up2=math.ldexp(1.0, up - up // 2), two_k=float(2**k), decide=decide,
                              sub_below=math.ldexp(1.0, fmt.emin), quantum=math.ldexp(1.0, fmt.emin - fmt.man))


def source(fmt: FloatFormat, saturate: bool, variant: str, margin: int = 0, rounding: str = "nearest",
           rand_bits: int = 32) -> tuple[str, str]:
    """The kernel's name and Python source for ``fmt`` (see the module docstring)."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown short-path variant {variant!r}; valid: {', '.join(VARIANTS)}")
    if not supported(fmt, rounding):
        raise ValueError(f"no short path for {getattr(fmt, 'name', fmt)!r} with rounding {rounding!r}")
    over = {"ieee": math.inf, "fn": math.nan, "fnuz": math.nan, "none": fmt.max}[fmt.special]
    inf_val = fmt.max if saturate else over
    arg, pre, post = _PRE[variant]
    if variant == "current":
        pre = pre.format(fmt_max=float(fmt.max), pow_margin=float(2.0 ** margin))
    if rounding == "stochastic":
        arg += ", key"
    tag = re.sub(r"\W", "_", f"{fmt.name}_{fmt.exp}_{fmt.man}_{fmt.bias}_{fmt.special}_{int(fmt.subnormals)}")
    name = (f"{rounding}{rand_bits if rounding == 'stochastic' else ''}_{variant}_{tag}_sat{int(saturate)}"
            + (f"_m{margin}" if variant == "current" else ""))
    src = _TEMPLATE.format(
        name=name, arg=arg, pre=pre, post=post, rounding=_rounding_block(fmt, rounding, rand_bits),
        maxval=float(fmt.max), inf_val=_float_literal(inf_val), sign=-(1 << 31),
        flush="" if fmt.subnormals else f"    r = torch.where(r < {float(fmt.min_normal)!r}, 0.0, r)",
        negzero="    rb = torch.where(rb == -2147483648, 0, rb)" if fmt.special == "fnuz" else "")
    return name, src


def kernel(fmt: FloatFormat, saturate: bool, variant: str = "plain", margin: int = 0, compiled: bool = True,
           rounding: str = "nearest", rand_bits: int = 32):
    """The short-path kernel ``k(out, x[, s][, key])`` writing into flat float32 ``out`` (``s``: the scale, given or
    received; ``key``: the (2,) int64 key of the random bits, stochastic rounding); its Python is generated once per
    key, and with ``compiled`` it is compiled lazily through ``compiling.compiled`` (each key has a code object of
    its own, so dynamo never counts one format's graph against another's)."""
    key = ("short path", fmt, bool(saturate), variant, int(margin) if variant == "current" else 0, rounding,
           int(rand_bits) if rounding == "stochastic" else 0)
    if compiled:
        c = _compiling.cached(key)
        return c if c is not None else _compiling.compiled(kernel(fmt, saturate, variant, margin, False, rounding,
                                                                  rand_bits), key)
    fn = _kernels.get(key)
    if fn is None:
        with _lock:
            fn = _kernels.get(key)
            if fn is None:
                name, src = source(fmt, saturate, variant, key[4], rounding, rand_bits)
                filename = f"<lowp short path {name}>"
                linecache.cache[filename] = (len(src), None, src.splitlines(True), filename)
                ns = {"torch": torch, "I32": torch.int32, "F32": torch.float32, "hash_bits32": hash_bits32,
                      "materialised": _compiling.materialised}
                exec(compile(src, filename, "exec"), ns)  # noqa: S102 - our own template, format constants only
                fn = _kernels[key] = ns[name]
    return fn
