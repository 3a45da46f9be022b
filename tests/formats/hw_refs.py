"""Exact (fractions.Fraction) references for the accelerator formats (docs/accelerator-recipes.md): MX scale roundings, FP8
row/block scaling (torchao and TE orders), NVFP4 (TE and torchao orders). Every float32 operation of the
definitions is written as the exact value followed by one correctly rounded step ``rn32``; nothing here calls lowp."""
from __future__ import annotations

import math
from fractions import Fraction

from lowp_refs import round_int

FLT_MAX = Fraction((2**24 - 1) * 2**104)


class Grid:
    """A float format's finite values by definition: ``man`` mantissa bits, smallest normal exponent ``emin``,
    largest value ``max`` (subnormals kept)."""

    def __init__(self, man: int, emin: int, max_value: Fraction):
        self.man, self.emin, self.max = man, emin, Fraction(max_value)


E4M3 = Grid(3, -6, 448)
E5M2 = Grid(2, -14, 57344)
E2M1 = Grid(1, 0, 6)
E3M2 = Grid(2, -2, 28)
GRIDS = {"e4m3": E4M3, "e5m2": E5M2, "e2m1": E2M1, "e3m2": E3M2}


def flog2(a: Fraction) -> int:
    """floor(log2 a) for a > 0, exactly."""
    e = a.numerator.bit_length() - a.denominator.bit_length()
    while Fraction(2) ** e > a:
        e -= 1
    while Fraction(2) ** (e + 1) <= a:
        e += 1
    return e


def rn32(v: Fraction) -> Fraction:
    """v rounded to float32 (ties to even, subnormals, overflow to ±inf as a Python float)."""
    if v == 0:
        return Fraction(0)
    a = abs(v)
    q = Fraction(2) ** (max(flog2(a), -126) - 23)
    r = round_int(a / q, "nearest") * q
    if r >= Fraction(2) ** 128:
        return math.inf if v > 0 else -math.inf  # type: ignore[return-value]
    return r if v > 0 else -r


def grid_rn(grid: Grid, v: Fraction) -> Fraction:
    """Any rational v rounded to nearest (ties to even) on ``grid``, saturating at ±max."""
    v = Fraction(v)
    if v == 0:
        return Fraction(0)
    a = abs(v)
    quantum = Fraction(2) ** (max(flog2(a), grid.emin) - grid.man)
    r = min(round_int(a / quantum, "nearest") * quantum, grid.max)
    return r if v > 0 else -r


def block_amax(vals) -> Fraction:
    fin = [abs(Fraction(v)) for v in vals if math.isfinite(v)]
    return max(fin) if fin else Fraction(0)


# ---- MX ------------------------------------------------------------------------------------------------------------

def mx_exponent(a: Fraction, emax: int, max_elem: Fraction, man: int, mode: str) -> int:
    """E8M0 exponent from block amax a (docs/accelerator-recipes.md), clamped to -127..127; -127 for a = 0."""
    if a == 0:
        return -127
    if mode == "floor":
        e = flog2(a) - emax
    elif mode == "ceil":  # smallest e with 2^e >= a
        e = flog2(a) + (0 if Fraction(2) ** flog2(a) == a else 1) - emax
    elif mode == "rceil":  # smallest E with max_elem * 2^E >= a
        e = flog2(a / max_elem)
        if max_elem * Fraction(2) ** e < a:
            e += 1
    else:  # even: a rounded to ``man`` mantissa bits (ties to even), then floor(log2)
        fa = flog2(a)
        quantum = Fraction(2) ** (fa - man)
        e = flog2(round_int(a / quantum, "nearest") * quantum) - emax
    return max(-127, min(127, e))


def mx_reference(vals, name: str, mode: str) -> list[float]:
    """One MX block; ``name`` an element float format or "int8" (MXINT8: k/64, |k| <= 127, 6 mantissa bits)."""
    if name == "int8":
        max_elem, man, emax = Fraction(127, 64), 6, 0
    else:
        grid = GRIDS[name]
        max_elem, man = grid.max, grid.man
        emax = flog2(max_elem)
    e = mx_exponent(block_amax(vals), emax, max_elem, man, mode)
    X = Fraction(2) ** e
    out = []
    for v in vals:
        if not math.isfinite(v):
            out.append(v)
            continue
        if name == "int8":
            q = Fraction(max(-127, min(127, round_int(Fraction(v) / X * 64, "nearest"))), 64)
        else:
            q = grid_rn(grid, Fraction(v) / X)
        out.append(float(rn32(q * X)))
    return out


# ---- FP8 with FP32 / power-of-two scales ---------------------------------------------------------------------------

def fp8_scale(a: Fraction, style: str, pow2: bool, fmt_max=Fraction(448)) -> Fraction:
    if style == "torchao":
        s = rn32(fmt_max / max(a, Fraction(1e-12)))
    else:
        s = FLT_MAX if a == 0 else rn32(fmt_max / a)
        if s == math.inf:
            s = FLT_MAX
    if pow2:
        s = Fraction(2) ** flog2(s)
    if style == "te" and a == 0:
        s = Fraction(1)
    return s


def fp8_block_reference(vals, style: str, pow2: bool) -> list[float]:
    s = fp8_scale(block_amax(vals), style, pow2)
    out = []
    for v in vals:
        if not math.isfinite(v):
            out.append(v)
            continue
        t = rn32(Fraction(v) * s)
        t = max(-Fraction(448), min(Fraction(448), t))
        q = grid_rn(E4M3, t)
        out.append(float(rn32(q / s) if style == "torchao" else rn32(q * rn32(1 / s))))
    return out


# ---- NVFP4 ---------------------------------------------------------------------------------------------------------

def nvfp4_tensor_scales(big_a: Fraction, order: str):
    """(s_enc or None, s_dec) per order."""
    if order == "te":
        s_enc = FLT_MAX if big_a == 0 else rn32(Fraction(2688) / big_a)
        if s_enc == math.inf:
            s_enc = FLT_MAX
        if s_enc == 0:
            s_enc = Fraction(1)
        return s_enc, rn32(1 / s_enc)
    return None, rn32(big_a / 2688)


def nvfp4_block_reference(vals, big_a: Fraction, order: str):
    """(values handed on, codes q, block scale d_b) for one block."""
    s_enc, s_dec = nvfp4_tensor_scales(big_a, order)
    a_b = block_amax(vals)
    if order == "te":
        mult = rn32(s_enc * rn32(Fraction(1, 6)))
        d = min(rn32(a_b * mult), Fraction(448))
        d_b = grid_rn(E4M3, d)
        den = rn32(d_b * s_dec)
        e_b = FLT_MAX if den == 0 else min(rn32(1 / den), FLT_MAX)
    else:
        if s_dec == 0:
            return [0.0 * v if math.isfinite(v) else v for v in vals], None, None
        d = rn32(rn32(a_b / 6) / s_dec)
        d_b = grid_rn(E4M3, max(Fraction(1, 64), min(Fraction(448), d)))
        total = rn32(s_dec * d_b)
    out, codes = [], []
    for v in vals:
        if not math.isfinite(v):
            out.append(v)
            codes.append(None)
            continue
        if order == "te":
            t = rn32(Fraction(v) * e_b)
        elif total == 0:  # our documented choice: 0 stays 0, anything else overflows to ±6
            t = Fraction(0) if v == 0 else Fraction(6 if v > 0 else -6)
        else:
            t = rn32(Fraction(v) / total)
        if t == math.inf or t == -math.inf:
            t = Fraction(6) if t > 0 else Fraction(-6)
        t = max(Fraction(-6), min(Fraction(6), t))
        q = grid_rn(E2M1, t)
        codes.append(q)
        y = float(rn32(q * d_b * s_dec))
        out.append(math.copysign(y, v) if y == 0 else y)
    return out, codes, d_b
