"""Numerics statistics on tensors with known content."""
import math

import pytest
import torch

import lowp
from lowp.analysis import stats

E5M2 = lowp.get_format("e5m2")   # ieee, min subnormal 2^-16, max 57344
E4M3 = lowp.get_format("e4m3")   # fn, max 448, overflow -> NaN


def test_underflow_counts_exactly_the_values_below_half_the_smallest_subnormal():
    n, k = 1000, 37
    tiny = E5M2.min_subnormal
    x = torch.linspace(1.0, 2.0, n)                      # normal values: never flushed
    x[:k] = tiny * torch.linspace(0.05, 0.45, k)         # below tiny/2: round to zero
    x[:k:2] *= -1
    x[k:k + 5] = tiny * 0.55                             # above tiny/2: round to tiny, not flushed
    x[k + 5:k + 9] = 0.0                                 # zeros are not underflow
    xq = lowp.quantize(x, E5M2)
    assert int((xq[:k] == 0).sum()) == k
    assert stats.underflow_fraction(x, xq) == k / n
    assert stats.tensor_stats(x, xq, E5M2)["underflow"] == k / n


def test_overflow_counts_values_beyond_max_and_nonfinite_results():
    x = torch.ones(100)
    x[:3] = torch.tensor([500.0, -1000.0, 449.0])        # > 448
    x[3] = 440.0                                          # representable range, rounds to 448: not overflow
    x[4] = float("inf")                                   # non-finite input: not counted
    x[5] = float("nan")
    xq = lowp.quantize(x, E4M3)
    assert torch.isnan(xq[:2]).all()
    assert stats.overflow_fraction(x, xq, E4M3) == 3 / 100
    xs = lowp.quantize(x, E4M3, saturate=True)            # saturated: counted by |x| > max
    assert stats.overflow_fraction(x, xs, E4M3) == 3 / 100
    y = torch.tensor([1e6, 1.0, -1e6, 2.0])
    assert stats.overflow_fraction(y, lowp.quantize(y, E5M2), E5M2) == 0.5


def test_subnormal_fraction_and_formats_without_subnormals():
    sub = E5M2.min_subnormal
    x = torch.tensor([3 * sub, -sub, E5M2.min_normal, 1.0, 0.0, 2 * sub, 5.0, 7.0])
    xq = lowp.quantize(x, E5M2)
    assert stats.subnormal_fraction(xq, E5M2) == 3 / 8
    assert stats.subnormal_fraction(xq, lowp.get_format("int8")) == 0.0


def test_sqnr_of_a_known_perturbation():
    x = torch.full((1000,), 2.0)
    d = torch.full((1000,), 2.0**-6)                     # exact in float32: Σx²/Σd² = 4 / 2^-12 = 2^14
    d[::2] *= -1
    assert stats.sqnr_db(x, x + d) == pytest.approx(10 * math.log10(2.0**14), abs=1e-12)   # 42.14 dB
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5000, generator=g)
    e = 1e-2 * torch.randn(5000, generator=g)
    ref = 10 * math.log10(float((x.double() ** 2).sum()) / float((e.double() ** 2).sum()))
    assert stats.sqnr_db(x, x + e) == pytest.approx(ref, abs=1e-3)
    assert stats.sqnr_db(x, x.clone()) == math.inf
    assert stats.sqnr_db(torch.tensor([1e6]), torch.tensor([float("inf")])) == -math.inf


def test_sqnr_of_rounding_matches_the_uniform_noise_model():
    # 8-bit float rounding of N(0,1): SQNR ~ 6.02*(m+1) + 10log10(12 / E[2^(2e)]) region; just check the ordering
    x = torch.randn(20000, generator=torch.Generator().manual_seed(1))
    s = [stats.sqnr_db(x, lowp.quantize(x, f)) for f in ("e5m2", "e4m3", "bf16", "fp16")]
    assert s[0] < s[1] < s[2] < s[3]
    assert s[1] - s[0] == pytest.approx(6.02, abs=0.6)    # one more mantissa bit: ~6 dB


def test_amax_and_exponent_histogram():
    x = torch.tensor([1.0, 1.5, 2.0, 3.0, 0.25, 0.0, -4.0, float("nan"), 0.375])
    assert stats.amax(x) == 4.0
    assert stats.exponent_histogram(x) == {-2: 2, 0: 2, 1: 2, 2: 1}
    assert stats.exponent_histogram(torch.zeros(3)) == {}
    d = stats.tensor_stats(x, x, E5M2, histogram=True)
    assert d["n"] == 9 and d["exp_hist"][1] == 2 and d["sqnr_db"] == math.inf


@pytest.mark.parametrize("fmt", ["e5m2", "e4m3", "e2m1", "int8"])
def test_fast_tensor_stats_equal_the_reference_functions(fmt):
    f = lowp.get_format(fmt)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(4000, generator=g) * torch.exp2(torch.randint(-20, 12, (4000,), generator=g).float())
    xq = lowp.quantize(x, f, saturate=True)
    d = stats.tensor_stats(x, xq, f)
    assert d["underflow"] == stats.underflow_fraction(x, xq) > 0
    assert d["overflow"] == stats.overflow_fraction(x, xq, f)
    assert d["subnormal"] == stats.subnormal_fraction(xq, f)
    assert d["sqnr_db"] == pytest.approx(stats.sqnr_db(x, xq), abs=1e-4)
    assert d["amax"] == stats.amax(x)
