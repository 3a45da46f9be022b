"""Stochastic rounding of the scaled formats — integers (per tensor, per channel), dynamic fixed point (per tensor,
per block), MX (float and int8 elements) — against exact references written here in rationals.

For each value v the reference gives its two candidates on the format's grid, c0 (toward the truncation side the
format's hardware rule uses) and c1, and the defined probability of c1 with k random bits, P1 = floor(f·2^k) / 2^k
(f the fraction of the way from c0 to c1; module docstrings of ``lowp.rounding`` and ``formats/scaled.py``). Every
test block holds the same row of values ``ROWS`` times (the same scale for every row; the random bits differ per
element), so each value is rounded ``ROWS`` times. Checked, with a fixed seed:

* every result is exactly c0 or c1 (the exact part of the oracle);
* the count of c1 is within 5 standard deviations of ROWS·P1 (5, not 4: about 300 such counts are checked here,
  and 5 sigma keeps a correct implementation's chance of any false failure below 1e-4);
* unbiasedness (k = 32): the mean rounding error of each value is within 4 standard errors of zero,
  SE = |c1 - c0|·sqrt(P1(1 - P1) / ROWS) (for a value on the grid the error must be exactly zero); values beyond
  the largest grid point (DFP's and int's clamp to ±(2^(b-1) - 1)) saturate, which is biased by design, and are
  checked by the first two points only.
"""
import math
from fractions import Fraction

import pytest
import torch

import lowp
from lowp.formats import DFPFormat, IntFormat, MXFormat

from lowp_refs import FloatGrid, grid_bracket, to_f32

ROWS = 2000  # rows x 32 values stays below the compiled-path size: the eager references are under test here
                # (tests/formats/test_dispatch.py checks the compiled twins bit for bit against them)


def base_row(seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(32, generator=g) * torch.exp2(torch.randint(-3, 3, (32,), generator=g).float())
    x[5] = 0.0
    x[6] = 0.75 * float(x.abs().max())  # a simple fraction of amax
    return x


def p_up(f: Fraction, k: int) -> Fraction:
    return Fraction(math.floor(f * 2**k), 2**k)


def int_candidates(q: Fraction, k: int, step: Fraction, lim: int) -> tuple[float, float, Fraction]:
    """Integer grid ``step``·{-lim..lim}: round q = v/step down (toward -inf) or up, P(up) = floor(frac·2^k)/2^k."""
    fl = math.floor(q)
    frac = q - fl
    c0, c1 = max(-lim, min(lim, fl)), max(-lim, min(lim, fl + 1))
    return to_f32(c0 * step), to_f32(c1 * step), p_up(frac, k)


def float_candidates(p: Fraction, k: int, grid: FloatGrid, scale: Fraction) -> tuple[float, float, Fraction]:
    """Float element grid (saturating): the magnitude rounds toward zero or away, P(away) = floor(f·2^k)/2^k."""
    lo, hi = grid_bracket(p, grid)
    f = Fraction(0) if hi == lo else (abs(p) - lo) / (hi - lo)
    s = -1 if p < 0 else 1
    return to_f32(s * lo * scale), to_f32(s * hi * scale), p_up(f, k)


def reference(fmt, row: torch.Tensor, k: int) -> list[tuple[float, float, Fraction]]:
    vals = row.tolist()
    if isinstance(fmt, IntFormat):  # per tensor, or per row (axis=1): the same scale, since every row is equal
        s = float(torch.tensor(max(abs(v) for v in vals), dtype=torch.float32) / fmt.qmax)  # fl32(amax / qmax)
        # the quotient is formed in float64 (formats/integer.py): Python's float division is the same IEEE op
        return [int_candidates(Fraction(v / s), k, Fraction(s), fmt.qmax) for v in vals]
    if isinstance(fmt, DFPFormat):
        out = []
        b = fmt.block or len(vals)
        for i in range(0, len(vals), b):
            blk = vals[i:i + b]
            e = math.frexp(max(abs(v) for v in blk))[1] - 1 - (fmt.bits - 2)
            step = Fraction(2) ** e
            out += [int_candidates(Fraction(v) / step, k, step, 2 ** (fmt.bits - 1) - 1) for v in blk]
        return out
    assert isinstance(fmt, MXFormat) and fmt.block == 32
    amax = max(abs(v) for v in vals)
    X = Fraction(2) ** (math.frexp(amax)[1] - 1 - fmt.emax_elem)
    if fmt.element == "int8":
        return [int_candidates(Fraction(v) / X * 64, k, X / 64, 127) for v in vals]
    el = fmt.element
    grid = FloatGrid(el.exp, el.man, el.bias, el.special, el.subnormals)
    return [float_candidates(Fraction(v) / X, k, grid, X) for v in vals]


FORMATS = {
    "int8": IntFormat(8), "int4": IntFormat(4), "int8-per-channel": IntFormat(8, axis=1),
    "dfp8": DFPFormat(8), "dfp6-b16": DFPFormat(6, block=16),
    "mxfp8_e4m3": lowp.get_format("mxfp8_e4m3"), "mxfp4_e2m1": lowp.get_format("mxfp4_e2m1"),
    "mxint8": lowp.get_format("mxint8"),
}


@pytest.mark.parametrize("name", list(FORMATS))
@pytest.mark.parametrize("k", [32, 3])
def test_stochastic_rounding_against_exact_reference(name, k):
    fmt = FORMATS[name]
    row = base_row(seed=len(name) + k)
    x = row.repeat(ROWS, 1)
    got = fmt.quantize(x, "stochastic", rand_bits=k, generator=torch.Generator().manual_seed(7)).double()
    ref = reference(fmt, row, k)
    random_cols = 0
    for j, (c0, c1, p1) in enumerate(ref):
        col = got[:, j]
        is0, is1 = col == c0, col == c1
        assert bool((is0 | is1).all()), (name, j, float(row[j]), c0, c1, col[~(is0 | is1)][:3].tolist())
        n1 = int((is1 & ~is0).sum()) if c0 != c1 else round(ROWS * float(p1))
        p = float(p1)
        sd = math.sqrt(ROWS * p * (1 - p))
        assert abs(n1 - ROWS * p) <= 5 * sd + 1e-9, (name, j, float(row[j]), n1, ROWS * p)
        if c0 != c1 and 0 < p1 < 1:
            random_cols += 1
        clamped = not min(c0, c1) <= float(row[j]) <= max(c0, c1)  # saturated to ±lim: biased by design
        if k == 32 and not clamped:  # unbiased: E[Q(v)] = c0 + P1 (c1 - c0) = v up to 2^-32 of a step
            err = float(col.mean()) - float(row[j])
            se = abs(c1 - c0) * math.sqrt(p * (1 - p) / ROWS)
            assert abs(err) <= 4 * se + abs(c1 - c0) * 2.0**-30 + 1e-12 * abs(float(row[j])), (name, j, err, se)
    assert random_cols >= 16, random_cols  # the test really exercises random rounding


def test_stochastic_rounding_is_unbiased_where_nearest_is_not():
    """A value a quarter of the way between two int8 grid points: nearest always rounds down (bias -step/4);
    stochastic rounding's mean error is within 4 standard errors of zero (SE = step·sqrt(3/16 / n))."""
    n = 60000
    fmt = IntFormat(8)
    x = torch.full((n,), 10.25)
    x[0] = 127.0  # amax: scale 1, grid = integers
    sr = fmt.quantize(x, "stochastic", generator=torch.Generator().manual_seed(3))[1:].double()
    rn = fmt.quantize(x, "nearest")[1:].double()
    se = math.sqrt(3 / 16 / (n - 1))
    assert abs(float(sr.mean()) - 10.25) <= 4 * se
    assert float(rn.mean()) - 10.25 == -0.25
