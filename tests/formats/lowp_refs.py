"""Slow, obviously-correct references for the formats that have no ml_dtypes/torch oracle.

Everything is exact integer arithmetic: a float32 value is an integer multiple of 2^-149, so every value below is
kept as a Python int N meaning N * 2^-149 (``SHIFT``). No float arithmetic is used to decide a rounding.
"""
from __future__ import annotations

import bisect
import itertools
import math
from fractions import Fraction

SHIFT = 149  # float32's smallest subnormal is 2^-149: every float32 and every format value is an int * 2^-SHIFT


def to_units(x: float) -> int:
    """Exact |x| * 2^SHIFT for a finite float32 (or any float whose value is a multiple of 2^-149)."""
    f = Fraction(abs(x)) * 2**SHIFT
    assert f.denominator == 1, x
    return f.numerator


def from_units(n: int) -> float:
    """n * 2^-SHIFT as a float (exact: the values here have at most 24 significant bits)."""
    return math.ldexp(float(n), -SHIFT)


class FloatGrid:
    """The finite non-negative values of FloatFormat(exp, man, bias, special, subnormals), enumerated bit pattern by
    bit pattern from the format's definition, plus the value the grid would have just above max if the exponent
    range were unbounded (IEEE 754 §7.4: overflow is decided on the result rounded with unbounded exponent)."""

    def __init__(self, exp: int, man: int, bias: int, special: str, subnormals: bool = True):
        self.special, self.subnormals, self.man = special, subnormals, man
        vals: list[int] = []
        for e in range(2**exp):
            for m in range(2**man):
                if e == 2**exp - 1:
                    if special == "ieee":
                        continue  # Inf / NaN
                    if special == "fn" and m == 2**man - 1:
                        continue  # the all-ones pattern is NaN
                if e == 0:
                    num, p = m, 1 - bias - man  # subnormal: m * 2^(1-bias-man)
                else:
                    num, p = (2**man + m), e - bias - man
                vals.append(num << (p + SHIFT))
        vals = sorted(set(vals))
        self.max = vals[-1]
        self.min_normal = 1 << (1 - bias + SHIFT)
        # one step above max in the top binade, unbounded exponent
        emax = self.max.bit_length() - 1
        vals.append(self.max + (1 << (emax - man)))
        self.vals = vals

    def neighbours(self, a: int) -> tuple[int, int]:
        """(RD, RU) of magnitude a (units): the largest grid value <= a and the smallest >= a."""
        if a >= self.vals[-1]:
            return self.vals[-1], self.vals[-1]  # beyond the extended grid: overflow whatever the mode
        i = bisect.bisect_right(self.vals, a) - 1
        lo = self.vals[i]
        return (lo, lo) if lo == a else (lo, self.vals[i + 1])


def float_reference(grid: FloatGrid, x: float, mode: str, saturate: bool = False, rand: int | None = None,
                    rand_k: int | None = None) -> float:
    """Round float x (float32 value) onto ``grid`` with ``mode``; stochastic needs explicit ``rand`` (k bits):
    round the magnitude up iff rand + floor(frac * 2^k) >= 2^k, frac = (|x| - RD) / (RU - RD)."""
    special = grid.special
    if math.isnan(x):
        return math.nan
    neg = math.copysign(1.0, x) < 0
    max_v = from_units(grid.max)
    over_default = {"ieee": math.inf, "fn": math.nan, "fnuz": math.nan, "none": max_v}[special]
    if math.isinf(x):
        r = max_v if saturate else over_default
        return -r if neg else r
    a = to_units(x)
    lo, hi = grid.neighbours(a)
    if lo == hi:
        r = lo
    else:
        # modes on the magnitude: up for a negative number is toward zero, down is away from zero
        if neg:
            m = {"up": "zero", "down": "away_dir"}.get(mode, mode)
        else:
            m = {"up": "away_dir", "down": "zero"}.get(mode, mode)
        if m == "zero":
            r = lo
        elif m == "away_dir":
            r = hi
        elif m in ("nearest", "away"):
            d_lo, d_hi = a - lo, hi - a
            if d_lo != d_hi:
                r = lo if d_lo < d_hi else hi
            elif m == "away":
                r = hi
            else:
                r = lo if (lo // (hi - lo)) % 2 == 0 else hi  # the even integer significand on the gap's quantum
        elif m == "stochastic":
            top = ((a - lo) << rand_k) // (hi - lo)
            r = hi if rand + top >= (1 << rand_k) else lo
        else:
            raise ValueError(mode)
    if r > grid.max:
        toward_zero = mode == "zero" or (mode == "down" and not neg) or (mode == "up" and neg)
        v = max_v if (saturate or toward_zero) else over_default
    else:
        v = from_units(r)
        if not grid.subnormals and r < grid.min_normal:
            v = 0.0
    if v == 0.0 and special == "fnuz":
        return 0.0
    return -v if neg else v


# ---- exact helpers for the scaled formats -------------------------------------------------------------------------

def round_int(v: Fraction, mode: str) -> int:
    """v rounded to an integer with a deterministic mode (nearest = ties to even, away = ties away from zero)."""
    fl = math.floor(v)
    fr = v - fl
    if fr == 0:
        return fl
    if mode == "down":
        return fl
    if mode == "up":
        return fl + 1
    if mode == "zero":
        return fl if v > 0 else fl + 1
    if fr != Fraction(1, 2):
        return fl + 1 if fr > Fraction(1, 2) else fl
    if mode == "away":
        return fl + 1 if v > 0 else fl
    return fl if fl % 2 == 0 else fl + 1  # nearest: ties to even


def to_f32(v: Fraction) -> float:
    """The float32 value nearest to v (ties to even), as a Python float; overflow is not handled (not needed)."""
    if v == 0:
        return 0.0
    a = abs(v)
    e = a.numerator.bit_length() - a.denominator.bit_length()  # floor(log2 a) is e or e - 1
    if Fraction(2) ** e > a:
        e -= 1
    q = Fraction(2) ** (max(e, -126) - 23)
    n = round_int(a / q, "nearest")
    r = float(n * q)  # n has <= 25 bits: exact in float64
    return -r if v < 0 else r


def brute_ternary_error(g) -> float:
    """min over t in {-1,0,1}^N and alpha of ||g - alpha t||^2 (alpha optimal for each t: <g,t>/<t,t>), by trying
    every t; ``g`` any sequence of floats (list, numpy or torch 1-D)."""
    g = [float(v) for v in g]
    sq = sum(v * v for v in g)
    best = sq
    for t in itertools.product((-1, 0, 1), repeat=len(g)):
        nz = sum(abs(v) for v in t)
        if nz:
            dot = sum(a * b for a, b in zip(g, t))
            best = min(best, sq - dot * dot / nz)
    return best


def grid_bracket(v: Fraction, grid: FloatGrid) -> tuple[Fraction, Fraction]:
    """(RD, RU) of the magnitude |v| (any rational) on ``grid``, saturating: beyond max both are max."""
    a = abs(v) * 2**SHIFT  # in units, possibly not an integer
    top = grid.max
    if a >= top:
        return Fraction(top, 2**SHIFT), Fraction(top, 2**SHIFT)
    i = bisect.bisect_right(grid.vals, a) - 1
    lo = grid.vals[i]
    hi = lo if lo == a else grid.vals[i + 1]
    return Fraction(lo, 2**SHIFT), Fraction(hi, 2**SHIFT)


def round_to_grid(v: Fraction, grid: FloatGrid, mode: str) -> Fraction:
    """v (any rational) rounded onto the float ``grid`` with a deterministic mode, saturating to ±max (the MX
    element rule). Modes act on the magnitude after choosing the direction from the sign, as in IEEE 754: up is
    toward +inf, down toward -inf, zero toward 0, nearest/away to the nearer value (ties to the even significand /
    away from zero)."""
    neg = v < 0
    lo, hi = grid_bracket(v, grid)
    a = abs(v)
    if lo == hi:
        r = lo
    else:
        m = {"up": "zero" if neg else "out", "down": "out" if neg else "zero"}.get(mode, mode)
        if m == "zero":
            r = lo
        elif m == "out":
            r = hi
        elif a - lo != hi - a:
            r = lo if a - lo < hi - a else hi
        elif m == "away":
            r = hi
        else:  # ties to even: the significand of lo on the quantum (hi - lo) of its binade
            r = lo if (lo / (hi - lo)) % 2 == 0 else hi
    return -r if neg else r
