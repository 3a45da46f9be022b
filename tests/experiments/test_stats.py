"""Seed statistics: Student-t quantiles against printed tables, the paired t interval against a hand computation,
and its edge cases (identical runs, a constant difference, one seed)."""
import math

import pytest

from lowp.experiments.stats import betainc, mean_sd, paired_interval, t_cdf, t_quantile

# two-sided 95% critical values t_{0.975, df}, as printed in any Student-t table (e.g. NIST/SEMATECH e-Handbook of
# Statistical Methods, table 1.3.6.7.2), and the normal limit 1.959964
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 9: 2.262, 10: 2.228, 20: 2.086, 30: 2.042}


@pytest.mark.parametrize("df,t", sorted(T975.items()))
def test_t_quantile_matches_table(df, t):
    assert t_quantile(0.975, df) == pytest.approx(t, abs=5e-4)
    assert t_quantile(0.025, df) == pytest.approx(-t, abs=5e-4)


def test_t_quantile_closed_forms_and_limits():
    # df 1 is the Cauchy distribution: quantile tan(pi (p - 1/2)); df 2: (2p-1) sqrt(2 / (4p(1-p)))
    for p in (0.6, 0.9, 0.975, 0.995):
        assert t_quantile(p, 1) == pytest.approx(math.tan(math.pi * (p - 0.5)), rel=1e-9)
        assert t_quantile(p, 2) == pytest.approx((2 * p - 1) * math.sqrt(2 / (4 * p * (1 - p))), rel=1e-9)
    assert t_quantile(0.975, 1e7) == pytest.approx(1.959964, abs=1e-5)
    assert t_cdf(0.0, 4) == 0.5 and t_cdf(-1.5, 4) == pytest.approx(1 - t_cdf(1.5, 4), abs=1e-15)


def test_betainc_special_cases():
    # I_x(a, 1) = x^a and I_x(1, b) = 1 - (1-x)^b
    assert betainc(2.5, 1.0, 0.3) == pytest.approx(0.3 ** 2.5, rel=1e-12)
    assert betainc(1.0, 3.0, 0.2) == pytest.approx(1 - 0.8 ** 3, rel=1e-12)
    with pytest.raises(ValueError, match="x must be in"):
        betainc(1.0, 1.0, 1.5)


def test_paired_interval_by_hand():
    iv = paired_interval([1.0, 2.0, 3.0])
    half = 4.302653 * 1.0 / math.sqrt(3)  # mean 2, sd 1, t_{0.975,2}
    assert (iv.n, iv.mean, iv.sd) == (3, 2.0, 1.0)
    assert iv.lo == pytest.approx(2 - half, abs=1e-5) and iv.hi == pytest.approx(2 + half, abs=1e-5)


def test_paired_interval_significance():
    assert not paired_interval([1.0, 2.0, 3.0]).lo > 0  # half-width 2.48 > mean 2: contains 0
    assert not paired_interval([1.0, 2.0, 3.0]).significant
    assert paired_interval([-0.40, -0.42, -0.38, -0.41]).significant
    same = paired_interval([0.0, 0.0, 0.0])
    assert (same.lo, same.hi, same.significant) == (0.0, 0.0, False)
    const = paired_interval([0.01, 0.01])
    assert const.significant and const.lo == const.hi == 0.01
    one = paired_interval([0.3])
    assert (one.lo, one.hi, one.significant, one.sd) == (None, None, None, None)
    with pytest.raises(ValueError, match="finite"):
        paired_interval([1.0, float("nan")])
    assert mean_sd([]) == (None, None)
