"""AutoSparse: masked forward, annealed backward, threshold gradient, schedule, controller, recipe integration."""
import math

import pytest
import torch
from torch import nn

import lowp
from lowp.techniques import autosparse as A
from lowp.techniques.flops import sparsity_report


def test_masked_forward_values():
    w = torch.tensor([[0.5, -0.2, 0.05], [-0.01, 0.3, -0.7]])
    s = torch.tensor(math.log(0.1 / 0.9))  # sigmoid(s) = 0.1
    out = A.sparse_weight(w, s, alpha=0.5)
    ref = torch.tensor([[0.4, -0.1, 0.0], [0.0, 0.2, -0.6]])
    torch.testing.assert_close(out, ref)
    assert (out[w.abs() <= 0.1] == 0).all()


@pytest.mark.parametrize("alpha", [0.0, 0.3, 0.5])
def test_annealed_backward_elementwise(alpha):
    torch.manual_seed(0)
    w = torch.randn(6, 7, requires_grad=True)
    s = torch.tensor(math.log(0.5 / 0.5), requires_grad=True)  # threshold 0.5: a mix of kept and masked
    g = torch.randn(6, 7)
    A.sparse_weight(w, s, alpha).backward(g)
    kept = w.detach().abs() > 0.5
    assert kept.any() and (~kept).any()
    expect = torch.where(kept, g, alpha * g)
    torch.testing.assert_close(w.grad, expect)
    # threshold: dW̃/dT = -sign(W)·ReLU_α'; dT/ds = T(1-T) = 0.25
    factor = torch.where(kept, torch.ones(()), torch.full((), alpha))
    ds = (-(torch.sign(w.detach()) * factor * g).sum() * 0.25)
    torch.testing.assert_close(s.grad, ds)


def test_threshold_gradient_matches_finite_difference_when_kept():
    torch.manual_seed(1)
    w = torch.randn(20) * 2
    w = w[w.abs() > 0.5]  # all kept for thresholds near 0.3
    s0 = math.log(0.3 / 0.7)
    s = torch.tensor(s0, dtype=torch.float64, requires_grad=True)
    c = torch.randn(w.shape, dtype=torch.float64)
    f = lambda sv: (c * A.sparse_weight(w.double(), sv, 0.5)).sum()  # noqa: E731
    f(s).backward()
    h = 1e-6
    fd = (f(torch.tensor(s0 + h, dtype=torch.float64)) - f(torch.tensor(s0 - h, dtype=torch.float64))) / (2 * h)
    torch.testing.assert_close(s.grad, fd.detach(), rtol=1e-6, atol=1e-9)


def test_schedule_endpoints_and_monotone():
    sch = A.AlphaSchedule()
    assert sch(0, 10) == pytest.approx(0.5)
    assert sch(10, 10) == 0.0
    vals = [sch(e / 10, 10) for e in range(101)]
    assert all(a >= b for a, b in zip(vals, vals[1:]))
    assert vals[50] > 0
    early = A.AlphaSchedule(alpha0=0.5, end=0.5)
    assert early(5, 10) == 0.0 and early(9, 10) == 0.0 and early(4, 10) > 0
    for kind in A.SCHEDULES:
        s = A.AlphaSchedule(alpha0=0.3, kind=kind)
        assert s(0, 7) == pytest.approx(0.3)
        assert s(7, 7) == (0.3 if kind == "constant" else 0.0)
    with pytest.raises(ValueError, match="schedule"):
        A.AlphaSchedule(kind="exp")


def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(12, 32), nn.ReLU(), nn.Linear(32, 5))


def test_apply_on_epoch_and_state_dict():
    m = A.apply_autosparse(_mlp(), A.AutoSparseConfig(target=None, s0=math.log(0.1 / 0.9)))
    keys = set(m.state_dict())
    assert {"0.parametrizations.weight.original", "0.parametrizations.weight.0.s"} <= keys
    assert A.on_epoch(m, 0, 4) == pytest.approx(0.5)
    assert A.on_epoch(m, 4, 4) == 0.0
    assert A.on_epoch(_mlp(), 1, 4) is None  # no-op without AutoSparse
    w = m[0].parametrizations.weight.original.detach()
    torch.testing.assert_close(m[0].weight, torch.sign(w) * (w.abs() - 0.1).clamp_min(0))
    m2 = A.apply_autosparse(_mlp(), A.AutoSparseConfig(target=None))
    m2.load_state_dict(m.state_dict())
    torch.testing.assert_close(m2[0].weight, m[0].weight)
    A.remove_autosparse(m, bake=True)
    assert type(m[0]) is nn.Linear and (m[0].weight == 0).any()


def test_controller_reaches_target():
    m = A.apply_autosparse(_mlp(), A.AutoSparseConfig(target=0.7, ramp=0.5))
    x = torch.randn(16, 12)
    A.on_epoch(m, 5, 10)  # ramp over: target 0.7
    m.train()
    for _ in range(60):
        m(x)
    assert sparsity_report(m, x)["sparsity"] == pytest.approx(0.7, abs=0.03)


def test_recipe_modifier_and_emulate():
    r = lowp.get_recipe("bf16+autosparse:0.8")
    assert r.name == "bf16+autosparse:0.8" and r.transforms[-1] == "autosparse:0.8"
    assert r.input == lowp.get_recipe("bf16").input
    r2 = lowp.get_recipe("fp32+autosparse:none:alpha0=0:channel")
    assert r2.transforms == ("autosparse:none:alpha0=0:channel",)
    with pytest.raises(ValueError, match="autosparse options"):
        lowp.get_recipe("bf16+autosparse:bogus=1")
    m = lowp.emulate(_mlp(), r)
    assert isinstance(m[0], lowp.ops.modules.EmulatedLinear)
    layers = A.autosparse_layers(m)
    assert set(layers) == {"0", "2"}
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    A.on_epoch(m, 0, 2)
    x = torch.randn(8, 12)
    m(x).square().mean().backward()
    assert layers["0"].s.grad is not None and m[0].parametrizations.weight.original.grad is not None
    opt.step()
    # the emulated forward used bf16 operands of the sparse weight
    m.eval()  # (a training forward steers the threshold first: the weight would move under the check)
    w = m[0].weight.detach()
    ref = torch.nn.functional.linear(lowp.quantize(x, "bf16"), lowp.quantize(w, "bf16"), m[0].bias.detach())
    assert torch.equal(m[0](x).detach(), lowp.quantize(ref, "bf16"))  # exactly the bf16 recipe on the sparse weight
    assert (w == 0).any()  # and the weight it used is sparse
    # emulating again first restores (AutoSparse baked into the weights), then applies the new recipe
    lowp.emulate(m, "fp32+autosparse")
    assert set(A.autosparse_layers(m)) == {"0", "2"}
    lowp.restore(m)
    assert not A.autosparse_layers(m) and type(m[0]) is nn.Linear
    assert "0.weight" in m.state_dict()


def test_channel_granularity_shapes():
    m = A.apply_autosparse(nn.Conv1d(3, 4, 3), A.AutoSparseConfig(granularity="channel", target=None))
    p = A.autosparse_layers(m)[""]
    assert p.s.shape == (4, 1, 1)
    m(torch.randn(2, 3, 9)).sum().backward()
    assert p.s.grad.shape == (4, 1, 1)
