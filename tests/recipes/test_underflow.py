"""fp8-e5m2 without loss scaling loses the error signal to underflow; with loss scaling it does not
(Mellempudi et al. 2019). Measured as the fraction of non-zero grad_output elements that rounding flushed to zero,
counted by an observer on the emulated layers."""
import pytest
import torch
from torch import nn

import lowp
from lowp.ops import observe


@pytest.fixture(autouse=True)
def _eager(monkeypatch):
    monkeypatch.setenv("LOWP_COMPILE", "0")


def flushed_fraction(recipe_name: str, steps: int = 3) -> float:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(),
                          nn.Linear(64, 10))
    with torch.no_grad():  # a small-gradient regime (small weights, as deep in a well-trained deep net)
        for p in model.parameters():
            p.mul_(0.25)
    recipe = lowp.get_recipe(recipe_name)
    lowp.emulate(model, recipe)
    base = torch.optim.SGD(model.parameters(), lr=0.01)
    opt = lowp.LowpOptimizer(base, recipe)
    backward = opt.backward
    counts = torch.zeros(2)

    def obs(layer, role, x, xq, fmt):
        if role == "grad_output":
            counts[0] += ((xq == 0) & (x != 0)).sum()
            counts[1] += (x != 0).sum()

    g = torch.Generator().manual_seed(1)
    with observe.observing(obs):
        for _ in range(steps):
            x, y = torch.randn(1024, 32, generator=g), torch.randint(0, 10, (1024,), generator=g)
            opt.zero_grad()
            backward(nn.functional.cross_entropy(model(x), y))
            opt.step()
    return float(counts[0] / counts[1])


def test_no_loss_scaling_underflows_scaled_does_not():
    lost = flushed_fraction("fp8-e5m2-noscale")
    kept = flushed_fraction("fp8-e5m2")
    print(f"grad_output flushed to zero: no loss scaling {lost:.1%}, enhanced loss scaling {kept:.1%}")
    assert lost > 0.15
    assert kept < 0.01
