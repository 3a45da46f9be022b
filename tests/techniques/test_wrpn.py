"""WRPN: weight ranges and bit counts, activations, widening."""
import pytest
import torch
from torch import nn

from lowp.experiments.models import ResNetMini, mnist1d_cnn
from lowp.techniques.wrpn import widen, wrpn_weight

pytestmark = pytest.mark.usefixtures("one_thread")  # restored after each test


@pytest.mark.parametrize("k", [2, 3, 4, 8])
def test_weight_levels_and_range(k):
    w = torch.linspace(-3, 3, 20001)
    q = wrpn_weight(w, k)
    m = 2 ** (k - 1) - 1
    levels = torch.unique(q)
    assert len(levels) == 2 * m + 1 == 2**k - 1  # sign + (k-1)-bit magnitude
    torch.testing.assert_close(levels, torch.arange(-m, m + 1) / m)
    assert q.min() == -1 and q.max() == 1


def test_weight_values_and_gradient():
    w = torch.tensor([-1.5, -0.2, 0.07, 0.08, 0.5, 2.0], requires_grad=True)
    q = wrpn_weight(w, 4)  # step 1/7
    torch.testing.assert_close(q, torch.tensor([-7, -1, 0, 1, 4, 7]) / 7.0)
    q.sum().backward()
    assert w.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 1.0, 0.0]  # clip blocks outside [-1, 1]
    with pytest.raises(ValueError):
        wrpn_weight(w, 1)


def test_widen_matches_factory_width():
    torch.manual_seed(0)
    m = widen(mnist1d_cnn(32), 2)
    ref = mnist1d_cnn(64)
    assert [p.shape for p in m.parameters()] == [p.shape for p in ref.parameters()]
    assert m(torch.randn(3, 40)).shape == (3, 10)
    r = widen(ResNetMini(8), 3)
    assert r.stem.out_channels == 24 and r.head.in_features == 24 and r.head.out_features == 10
    assert r.blocks[0].bn1.running_mean.shape == (24,)
    assert r(torch.randn(2, 64)).shape == (2, 10)


def test_widen_keeps_parameter_identity_and_factory():
    m = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.LayerNorm(8), nn.Linear(8, 2))
    ids = [id(p) for p in m.parameters()]
    widen(m, 2)
    assert [id(p) for p in m.parameters()] == ids
    assert m[0].weight.shape == (16, 4) and m[2].weight.shape == (16,) and m[3].weight.shape == (2, 16)
    f = widen(lambda: nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 2)), 3)
    assert f()[0].out_features == 24
    assert widen(m, 1) is m
    with pytest.raises(ValueError, match="Embedding"):
        widen(nn.Sequential(nn.Embedding(5, 4), nn.Linear(4, 2)), 2)
    with pytest.raises(ValueError):
        widen(m, 0)
