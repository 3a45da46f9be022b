"""Variance retention ratio: closed form against a Monte-Carlo simulation with lowp's formats, and the
minimum-accumulator-bits scaling law.

Stated tolerance (closed form vs simulation, 4000 trials): |cf - mc| <= 0.3·(1 - mc) + 0.01 for the retained
ratio and 0.4·(1 - mc) + 0.015 for VRR — the closed form captures the size of the loss to within 30-40% of the
loss (plus the Monte-Carlo error, ~0.002-0.005 at 4000 trials), from no loss (VRR ≈ 1) to heavy swamping."""
import pytest
import torch

from lowp.analysis.vrr import min_accumulator_bits, retained_variance, vrr, vrr_table
from lowp.analysis.vrr_mc import vrr_monte_carlo

GRID = [(m, n) for n in (64, 256, 1024) for m in (3, 4, 5, 6, 7)]


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.mark.parametrize("m_acc,n", GRID)
def test_closed_form_matches_monte_carlo(m_acc, n):
    cf = vrr_table([m_acc], 5, n)[0]
    mc = vrr_monte_carlo(m_acc, 5, n, trials=4000, seed=n + m_acc)
    assert abs(cf.retained - mc.retained) <= 0.3 * (1 - mc.retained) + 0.01, (cf, mc)
    assert abs(cf.vrr - mc.vrr) <= 0.4 * abs(1 - mc.vrr) + 0.015, (cf, mc)


@pytest.mark.parametrize("m_acc,n,chunk", [(3, 512, 16), (4, 1024, 32)])
def test_chunked_closed_form_matches_monte_carlo(m_acc, n, chunk):
    cf = vrr_table([m_acc], 5, n, chunk)[0]
    mc = vrr_monte_carlo(m_acc, 5, n, chunk, trials=4000, seed=7)
    seq = vrr_monte_carlo(m_acc, 5, n, trials=4000, seed=7)
    assert mc.retained > seq.retained + 0.05                  # chunking really helps (simulation)
    assert abs(cf.retained - mc.retained) <= 0.3 * (1 - mc.retained) + 0.01, (cf, mc)


def test_simulation_is_exact_with_a_wide_accumulator():
    mc = vrr_monte_carlo(23, 5, 64, trials=500)
    assert mc.retained == pytest.approx(1.0, abs=1e-9) and mc.vrr == pytest.approx(1.0, abs=1e-9)


def test_heavy_swamping_is_detected_by_both():
    assert vrr_monte_carlo(2, 5, 1024, trials=1000).vrr < 0.3
    assert vrr(2, 5, 1024) < 0.3


def test_retention_increases_with_accumulator_width_and_falls_with_length():
    r = [x.retained for x in vrr_table(range(2, 16), 5, 4096)]
    assert all(a <= b + 1e-12 for a, b in zip(r, r[1:]))
    assert r[-1] == pytest.approx(1.0, abs=1e-6)
    assert retained_variance(6, 5, 256) > retained_variance(6, 5, 4096)
    assert retained_variance(6, 5, 4096, chunk=64) > retained_variance(6, 5, 4096)


def test_min_bits_grows_one_bit_per_4x_length_for_a_fixed_fraction_lost():
    ns = [64 * 4**k for k in range(6)]                       # 64 .. 65536
    bits = [min_accumulator_bits(n, 5, criterion="relative", eps=1e-3) for n in ns]
    steps = [b - a for a, b in zip(bits, bits[1:])]
    assert all(s in (0, 1, 2) for s in steps), bits
    assert sum(steps) == 5, bits                              # one bit per 4x n


def test_min_bits_under_the_v_cutoff_grows_one_bit_per_2x_length():
    # v(n) = exp(n(1 - VRR)) < 50 bounds the *absolute* variance lost, and 1 - VRR ~ n·2^(-2 m_acc)
    ns = [64 * 4**k for k in range(6)]
    bits = [min_accumulator_bits(n, 5) for n in ns]
    assert sum(b - a for a, b in zip(bits, bits[1:])) in (9, 10, 11), bits
    assert min_accumulator_bits(65536, 5, chunk=64) < min_accumulator_bits(65536, 5)


def test_bad_input_is_a_one_line_value_error():
    for bad in (dict(n=0, m_p=5), dict(n=10, m_p=-1), dict(n=10, m_p=5, chunk=0)):
        with pytest.raises(ValueError):
            min_accumulator_bits(**bad)
    with pytest.raises(ValueError, match="criterion"):
        min_accumulator_bits(100, 5, criterion="x")
    with pytest.raises(ValueError, match="no accumulator"):
        min_accumulator_bits(2**20, 5, max_bits=4)
