"""BUCKWILD!: fixed-point shared model with unbiased stochastic writes; a 2-worker lock-free run learns digits."""
import pytest
import torch

from lowp.experiments.buckwild import BuckwildConfig, SharedModel, run_buckwild, N_PARAMS

pytestmark = pytest.mark.timeout(600)  # multi-process


def test_dmgc_names_and_validation():
    assert BuckwildConfig().dmgc == "D8M8G32C8"
    assert BuckwildConfig(data_format=None, model_format=None).dmgc == "D32M32G32C32"
    assert BuckwildConfig("fixed<2,2>", "fixed<4,12>").dmgc == "D4M16G32C16"
    with pytest.raises(ValueError, match="fixed-point"):
        BuckwildConfig(model_format="e4m3")


def test_shared_model_int8_codes_and_unbiased_writes():
    m = SharedModel("fixed<2,6>", "stochastic")
    assert m.store.dtype == torch.int8 and m.store.is_shared()
    gen = torch.Generator().manual_seed(0)
    delta = torch.full((N_PARAMS,), 2**-6 / 4)  # a quarter of the grid step: nearest would never move
    for _ in range(40):
        m.add_(delta, gen)
    w = m.read()
    assert torch.equal(w * 64, torch.round(w * 64))          # on the grid
    assert abs(float(w.mean()) - 40 * 2**-6 / 4) < 0.02       # E[w] = 40 * delta = 0.15625
    n = SharedModel("fixed<2,6>", "nearest")
    for _ in range(40):
        n.add_(delta, gen)
    assert float(n.read().abs().max()) == 0.0                  # biased rounding loses every small update
    s = SharedModel("fixed<2,6>", "stochastic")
    s.add_(torch.full((N_PARAMS,), 5.0), gen)                  # saturates at 2 - 2^-6
    assert torch.all(s.read() == 2 - 2**-6) and s.saturated_fraction() == 1.0


def test_two_worker_buckwild_learns_digits():
    r = run_buckwild(BuckwildConfig(epochs=3, workers=2), timeout_s=120)
    assert r["dmgc"] == "D8M8G32C8"
    assert r["samples"] == 3 * 1437
    assert r["accuracy"] > 0.85, r
    assert r["samples_per_s"] > 0
