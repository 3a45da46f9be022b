"""Ternary residual: error non-increasing in the number of terms; greedy allocation under a budget."""
import pytest
import torch
from torch import nn

from lowp.techniques.ptq import model_stats, quantized_layers
from lowp.techniques.ternary_residual import (ResidualConfig, residual_expand, residual_terms, residual_weight,
                                              ternary_residual)

pytestmark = pytest.mark.usefixtures("one_thread")  # restored after each test


@pytest.mark.parametrize("method", ["optimal", "threshold"])
@pytest.mark.parametrize("group", [4, 16, 64])
def test_error_non_increasing(method, group):
    w = torch.randn(24, 48, generator=torch.Generator().manual_seed(group), dtype=torch.float64)
    errs = [float(((w - residual_expand(w, r, group, method)) ** 2).sum()) for r in range(1, 7)]
    assert all(b <= a for a, b in zip(errs, errs[1:]))
    assert errs[-1] < 0.2 * errs[0]
    # each term ternarizes the residual of the previous ones
    ts = residual_terms(w, 3, group, method)
    r2 = w - ts[0] - ts[1]
    from lowp.techniques.fgq import fgq_weight
    assert torch.equal(ts[2], fgq_weight(r2, group, method))


def test_residual_weight_per_row():
    w = torch.randn(4, 8, dtype=torch.float64)
    ts = residual_terms(w, 3, 4)
    rt = torch.tensor([1, 3, 0, 2])
    q = residual_weight(ts, rt)
    assert torch.equal(q[0], ts[0][0]) and torch.equal(q[2], torch.zeros(8, dtype=torch.float64))
    assert torch.allclose(q[1], ts[0][1] + ts[1][1] + ts[2][1])


def _model():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(),
                      nn.Linear(32, 2))
    with torch.no_grad():
        m[2].weight.copy_(torch.sign(m[2].weight) * 0.3)  # exactly ternary: a residual term gains nothing here
    return m


def test_uniform_terms_improve_output():
    m = _model()
    x = torch.randn(128, 8)
    ref = m(x)
    errs = [float((ternary_residual(m, [x], ResidualConfig(group=8, terms=r, max_terms=r, act_bits=None))(x) - ref)
                  .pow(2).mean()) for r in (1, 2, 3, 4)]
    assert all(b <= a * 1.0001 for a, b in zip(errs, errs[1:])) and errs[-1] < errs[0] / 4


def test_greedy_allocation_budget_and_sensitivity():
    m = _model()
    x = torch.randn(128, 8)
    per_term_layer = 32 * 32 * 2 // 8 + 4 * 32 * 32 // 8  # one more term on a 32x32 layer, group 8
    # budget_bytes counts the ternary layers' packed bytes: two inner layers with one term each, plus one term
    q = ternary_residual(m, [x], ResidualConfig(group=8, terms=1, max_terms=3, act_bits=None,
                                                budget_bytes=3 * per_term_layer))
    terms = {n: layer.info.get("terms") for n, layer in quantized_layers(q)}
    assert terms == {"0": None, "2": 1.0, "4": 2.0, "6": None}  # the extra term went to the layer that needs it
    # blocks of 16 filters: a budget of half a layer's term goes to 16 rows of the layer that needs it
    qb = ternary_residual(m, [x], ResidualConfig(group=8, terms=1, max_terms=3, act_bits=None, block=16,
                                                 budget_bytes=2 * per_term_layer + per_term_layer // 2))
    rows = {n: layer.info["rows_terms"] for n, layer in quantized_layers(qb) if "rows_terms" in layer.info}
    assert rows["2"] == [1] * 32 and sorted(rows["4"]) == [1] * 16 + [2] * 16
    # no budget, zero error target: terms are added while they gain anything (not to the exactly ternary layer)
    qe = ternary_residual(m, [x], ResidualConfig(group=8, terms=1, max_terms=3, act_bits=None, max_error=0.0))
    rows = {n: layer.info["rows_terms"] for n, layer in quantized_layers(qe) if "rows_terms" in layer.info}
    assert rows["2"] == [1] * 32 and rows["4"] == [3] * 32
    with pytest.raises(ValueError, match="terms"):
        ResidualConfig(terms=5, max_terms=4)
