"""Seed statistics of a comparison: mean ± sd over seeds, and the paired t interval of a recipe's difference to FP32.

The test (chosen for seeds that pair: seed s gives every recipe the same initial weights and data order). For each
seed s where both runs finished, d_s = metric(recipe, s) − metric(fp32, s). With n ≥ 2 differences, mean d̄ and
sample standard deviation s_d (n − 1 in the denominator), the two-sided 95% confidence interval of the mean
difference is

    d̄ ± t_{0.975, n−1} · s_d / √n            (Student 1908; the paired t interval of any statistics text)

and a recipe is *distinguishable from seed noise* when that interval excludes 0 (equivalently, a two-sided paired
t-test rejects "no difference" at the 5% level). It assumes the d_s are independent draws of a normal
variable, which seeds approximate; with few seeds the t quantile is large (12.7 for 2 seeds, 4.30 for 3, 2.78 for 5),
so only large or very consistent differences are marked. When every d_s is equal (s_d = 0, e.g. a recipe that
computes exactly what FP32 computes) the interval is the point d̄: marked when d̄ ≠ 0, not marked when d̄ = 0. With
one seed there is no interval and no mark.

The Student-t quantile is computed here (no SciPy): the CDF from the regularized incomplete beta function,
F(t) = 1 − ½·I_{ν/(ν+t²)}(ν/2, ½) for t ≥ 0 (Abramowitz & Stegun 26.7.1 / 26.5.27), evaluated by its
continued fraction (Numerical Recipes §6.4, modified Lentz), inverted by bisection.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Sequence

LEVEL = 0.95


def _betacf(a: float, b: float, x: float) -> float:
    """The continued fraction of the incomplete beta function (modified Lentz, relative accuracy 1e-15)."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 10000):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-15:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b), 0 ≤ x ≤ 1."""
    if not 0.0 <= x <= 1.0:
        raise ValueError(f"betainc: x must be in [0, 1], got {x!r}")
    if x in (0.0, 1.0):
        return x
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """P(T ≤ t) for Student's t with ``df`` degrees of freedom."""
    if df <= 0:
        raise ValueError(f"degrees of freedom must be positive, got {df!r}")
    tail = 0.5 * betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t >= 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t with ``df`` degrees of freedom (bisection on :func:`t_cdf`, to 1e-12)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"quantile probability must be in (0, 1), got {p!r}")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


def mean_sd(xs: Sequence[float]) -> tuple[float | None, float | None]:
    """(mean, sample standard deviation with n − 1); sd None for fewer than 2 values, both None for none."""
    n = len(xs)
    if n == 0:
        return None, None
    m = math.fsum(xs) / n
    if n < 2:
        return m, None
    return m, math.sqrt(math.fsum((x - m) ** 2 for x in xs) / (n - 1))


@dataclasses.dataclass(frozen=True)
class PairedInterval:
    """The paired difference of a recipe to FP32 over ``n`` seeds: mean, sd, the ``level`` confidence interval
    [lo, hi] (None for n < 2) and whether it excludes 0 (None for n < 2)."""

    n: int
    mean: float | None
    sd: float | None
    lo: float | None
    hi: float | None
    significant: bool | None
    level: float = LEVEL

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def paired_interval(diffs: Sequence[float], level: float = LEVEL) -> PairedInterval:
    """The paired t interval of the mean of ``diffs`` (see the module docstring)."""
    diffs = [float(d) for d in diffs]
    if any(not math.isfinite(d) for d in diffs):
        raise ValueError(f"paired differences must be finite, got {diffs!r}")
    n = len(diffs)
    m, sd = mean_sd(diffs)
    if n < 2:
        return PairedInterval(n, m, sd, None, None, None, level)
    half = t_quantile(0.5 + level / 2.0, n - 1) * sd / math.sqrt(n)
    lo, hi = m - half, m + half
    return PairedInterval(n, m, sd, lo, hi, bool(lo > 0 or hi < 0), level)
