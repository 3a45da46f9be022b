"""QAT transform and recipe families: names, first/last layers, state_dict, emulate integration, ternary-ft."""
import pytest
import torch
from torch import nn

import lowp
from lowp.experiments.models import mnist1d_cnn
from lowp.formats import TernaryFormat
from lowp.techniques.dorefa import DoReFaWeight, UnitClipAct, dorefa_weight
from lowp.techniques.pact import PACT, pact_modules
from lowp.techniques.qat import QATConfig, apply_qat, qat_layers, remove_qat
from lowp.techniques.ternary_ft import IntQuant, TernaryWeight
from lowp.techniques.wrpn import WRPNWeight

pytestmark = pytest.mark.usefixtures("one_thread")  # restored after each test


@pytest.mark.parametrize("name,transform", [("pact-w4a4", "pact:4:4"), ("dorefa-w2a3", "dorefa:2:3"),
                                            ("PACT-W1A2", "pact:1:2"), ("wrpn-w4a4-x2", "wrpn:4:4:2"),
                                            ("ternary-ft-g64", "ternary-ft:64"),
                                            ("ternary-ft-g4-a8", "ternary-ft:4:8")])
def test_recipe_names_parse(name, transform):
    r = lowp.get_recipe(name)
    assert isinstance(r, lowp.Recipe) and r.name == name.lower() and r.transforms == (transform,)
    assert r.source and r.notes
    assert all(getattr(r, role) is None for role in ("input", "weight", "output", "grad_output"))
    assert lowp.Recipe.from_json(r.to_json()) == r


@pytest.mark.parametrize("bad", ["pact-w0a4", "pact-w4a17", "pact-w4", "dorefa-wxa4", "wrpn-w1a4-x2",
                                 "wrpn-w4a4-x0", "wrpn-w4a4", "ternary-ft-g0", "pact-w4a4-x2"])
def test_bad_recipe_names(bad):
    with pytest.raises(ValueError):
        lowp.get_recipe(bad)


def test_layers_and_first_last_bits():
    m = apply_qat(mnist1d_cnn(), "pact-w2a3")
    layers = qat_layers(m)
    assert list(layers) == ["1", "3", "6", "10"]
    assert isinstance(layers["1"].qat_act, nn.Identity)  # model input left alone
    # first/last: 8-bit symmetric integers (DoReFa would fix the logits' scale), inner layers DoReFa
    assert isinstance(layers["1"].qat_weight, IntQuant) and isinstance(layers["10"].qat_weight, IntQuant)
    assert layers["1"].qat_weight.fmt.bits == 8 and layers["10"].qat_weight.fmt.bits == 8
    assert layers["3"].qat_weight.inner.bits == 2 and isinstance(layers["3"].qat_weight.inner, DoReFaWeight)
    assert [p.bits for p in pact_modules(m).values()] == [3, 3, 8]
    d = apply_qat(mnist1d_cnn(), QATConfig("dorefa", 2, "unit", 2, first_last_bits=None))
    assert list(qat_layers(d)) == ["3", "6"] and isinstance(d[3].qat_act, UnitClipAct)


def test_forward_uses_quantized_weight_and_input():
    torch.manual_seed(0)
    lin = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 4), nn.Linear(4, 2))
    x = torch.randn(5, 4)
    apply_qat(lin, QATConfig("dorefa", 2, "pact", 2, weight_scale="none", alpha_init=1.5))
    mid = lin[1]
    n = 3
    xq = torch.round(torch.clamp(x, 0, 1.5) / (1.5 / n)) * (1.5 / n)
    exp = torch.nn.functional.linear(xq, dorefa_weight(mid.weight.detach(), 2), mid.bias.detach())
    torch.testing.assert_close(mid(x), exp)
    scaled = apply_qat(nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 4), nn.Linear(4, 2)),
                       QATConfig("dorefa", 2, "none", 2))
    wq = scaled[1].qat_weight(scaled[1].weight)
    assert wq.abs().max().item() == pytest.approx(0.5)  # fan-in 4: grid in [-1, 1] / sqrt(4)


def test_state_dict_loadable():
    torch.manual_seed(0)
    plain = mnist1d_cnn()
    sd_plain = {k: v.clone() for k, v in plain.state_dict().items()}
    q = apply_qat(plain, "pact-w4a4")
    sd = q.state_dict()
    assert set(sd_plain) <= set(sd)  # same keys for the weights, plus the alphas
    assert {k for k in sd if k not in sd_plain} == {f"{i}.qat_act.{b}" for i in (3, 6, 10)
                                                    for b in ("alpha", "alpha_set")}
    for k, v in sd_plain.items():
        assert torch.equal(sd[k], v)
    q2 = apply_qat(mnist1d_cnn(), "pact-w4a4")
    x = torch.randn(4, 40)
    q(x)  # the first forward sets alpha from the data
    with torch.no_grad():
        q.get_submodule("3.qat_act").alpha.fill_(2.5)
    q2.load_state_dict(q.state_dict())  # strict
    assert q2.get_submodule("3.qat_act").alpha.item() == 2.5 and bool(q2.get_submodule("3.qat_act").alpha_set)
    torch.testing.assert_close(q(x), q2(x))  # loaded alphas are not re-initialised
    apply_qat(mnist1d_cnn(), "pact-w4a4").load_state_dict(sd_plain, strict=False)  # a plain checkpoint loads
    back = remove_qat(q)
    assert set(back.state_dict()) == set(sd_plain) and type(back[3]) is nn.Conv1d


def test_emulate_applies_transform_and_alpha_trains():
    torch.manual_seed(0)
    m = lowp.emulate(mnist1d_cnn(), "pact-w2a2")
    assert len(pact_modules(m)) == 3
    alphas = [p for n, p in m.named_parameters() if n.endswith("alpha")]
    assert len(alphas) == 3
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    x, y = torch.randn(32, 40) * 30, torch.randint(0, 10, (32,))
    nn.functional.cross_entropy(m(x), y).backward()
    assert any(a.grad is not None and a.grad.abs().sum() > 0 for a in alphas)
    before = [a.item() for a in alphas]
    opt.step()
    assert [a.item() for a in alphas] != before


def test_wrpn_recipe_widens():
    torch.manual_seed(0)
    m = lowp.emulate(mnist1d_cnn(), "wrpn-w4a4-x2")
    assert m[1].out_channels == 64 and m[10].in_features == 320 and m[10].out_features == 10
    assert isinstance(m[3].qat_weight, WRPNWeight) and m[3].qat_weight.bits == 4
    assert m(torch.randn(2, 40)).shape == (2, 10)


def test_ternary_ft_weights():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3))
    apply_qat(m, "ternary-ft-g4-a8")
    mid = m[2]
    assert isinstance(mid.qat_weight, TernaryWeight) and isinstance(m[0].qat_weight, IntQuant)
    wq = mid.qat_weight(mid.weight)
    torch.testing.assert_close(wq, lowp.quantize(mid.weight.detach(), TernaryFormat(4)))
    g = wq.detach().reshape(16, 4, 4)
    assert all(len(torch.unique(grp.abs())) <= 2 for row in g for grp in row)  # {0, alpha} per group
    mid.weight.grad = None
    m(torch.randn(5, 8)).sum().backward()
    assert mid.weight.grad is not None and mid.weight.grad.abs().sum() > 0  # straight-through


def test_transform_errors():
    with pytest.raises(ValueError, match="compose"):
        lowp.emulate(mnist1d_cnn(), lowp.get_recipe("pact-w4a4").replace(input="bf16"))
    with pytest.raises(ValueError):
        lowp.emulate(mnist1d_cnn(), lowp.Recipe(name="x", transforms=("pact:4",)))
    with pytest.raises(ValueError):
        lowp.emulate(mnist1d_cnn(), lowp.Recipe(name="x", transforms=("pact:4:4:bogus",)))
    m = lowp.emulate(mnist1d_cnn(), lowp.Recipe(name="x", transforms=("pact:4:4:alpha=3:per-channel",)))
    assert m[3].qat_act.alpha.shape == (32,) and m[3].qat_act.alpha[0].item() == 3.0
    with pytest.raises(ValueError):
        apply_qat(mnist1d_cnn(), "fp32")
    with pytest.raises(ValueError):
        QATConfig("sign", 2, "pact", 2)
    with pytest.raises(ValueError):
        apply_qat(nn.Sequential(nn.ReLU()), QATConfig("dorefa", 2, "pact", 2))


def test_reapply_replaces_quantizers():
    m = apply_qat(mnist1d_cnn(), "pact-w4a4")
    lowp.emulate(m, "dorefa-w2a2")
    assert not pact_modules(m) and isinstance(m[3].qat_act, UnitClipAct)
    assert isinstance(m[3].qat_act, UnitClipAct) and m[3].qat_act.bits == 2
    assert not any(isinstance(x, PACT) for x in m.modules())
