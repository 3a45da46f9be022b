"""lowp.emulate / lowp.restore: FP32 bit identity, parameters kept, exempt layers, role coverage in a model."""
import copy

import pytest
import torch
from torch import nn

import lowp
from lowp.ops import observe
from lowp.recipes import emulated_layers

from .models import GEMM_LAYERS, AllOps


@pytest.fixture(autouse=True)
def _eager(monkeypatch):
    monkeypatch.setenv("LOWP_COMPILE", "0")


def train(model, steps=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for _ in range(steps):
        idx = torch.randint(0, 20, (6, 8), generator=g)
        y = torch.randint(0, 5, (6,), generator=g)
        opt.zero_grad()
        nn.functional.cross_entropy(model(idx), y).backward()
        opt.step()
    return model


@pytest.mark.parametrize("recipe", ["fp32", lowp.Recipe(input="fp32", weight="fp32", grad_output="fp32")])
def test_fp32_recipe_is_bit_identical_to_plain_pytorch(recipe):
    torch.manual_seed(0)
    plain = AllOps()
    emu = lowp.emulate(copy.deepcopy(plain), recipe)
    # really swapped; the attention Matmuls stay plain (recipe.attention is None)
    assert set(emulated_layers(emu)) == set(GEMM_LAYERS) - {"qk", "pv"}
    train(plain)
    train(emu)
    for (n, a), (_, b) in zip(plain.named_parameters(), emu.named_parameters()):
        assert torch.equal(a.view(torch.int32), b.view(torch.int32)), n


def test_bf16_changes_training():  # the comparison above is not vacuous
    torch.manual_seed(0)
    plain = AllOps()
    emu = lowp.emulate(copy.deepcopy(plain), "bf16")
    train(plain, 2)
    train(emu, 2)
    assert not torch.equal(plain.fc.weight, emu.fc.weight)


def test_emulate_restore_keeps_parameters_state_dict_and_repr():
    torch.manual_seed(0)
    m = AllOps()
    sd = m.state_dict()
    ptrs = {n: p.data_ptr() for n, p in m.named_parameters()}
    lowp.emulate(m, "fp8-e5m2")
    assert list(m.state_dict()) == list(sd)
    assert all(torch.equal(m.state_dict()[k], v) for k, v in sd.items())
    assert {n: p.data_ptr() for n, p in m.named_parameters()} == ptrs
    assert type(m.conv1).__name__ == "EmulatedConv1d" and isinstance(m.conv1, nn.Conv1d)
    assert "recipe=fp8-e5m2" in repr(m.conv1) and "recipe=fp8-e5m2" in repr(m.qk)
    assert type(m.emb) is nn.Embedding and type(m.head) is nn.Linear  # first/last exempt
    lowp.emulate(m, "bf16")  # re-emulating replaces the recipe
    assert "recipe=bf16" in repr(m.conv1) and "EmulatedEmbedding" in repr(m.emb)
    lowp.restore(m)
    assert [type(getattr(m, n)) for n in ("emb", "conv1", "conv2", "fc", "head")] == \
        [nn.Embedding, nn.Conv1d, nn.Conv2d, nn.Linear, nn.Linear]
    assert m.qk.lowp_ctx is None and "recipe" not in repr(m)
    assert {n: p.data_ptr() for n, p in m.named_parameters()} == ptrs
    m.load_state_dict(sd)


ROLE_FMT = dict(input="e4m3", weight="e5m2", output="e3m4", grad_output="e5m2", grad_input="bf16", grad_weight="fp16")


def representable(x, fmt):
    q = lowp.quantize(x, fmt)
    return torch.equal(q[~torch.isnan(x)], x[~torch.isnan(x)])


def test_role_coverage_in_a_model_forward_and_backward():
    """Every non-exempt layer rounds exactly the six roles, each to its own format (checked on the observer's
    values, on layer outputs via forward hooks and on weight gradients); exempt layers are untouched."""
    torch.manual_seed(0)
    r = lowp.Recipe(name="roles", exempt=("fc",), exempt_first_last=True, **ROLE_FMT)
    m = lowp.emulate(AllOps(), r)
    seen = []

    def obs(layer, role, x, xq, fmt):
        assert fmt.name == ROLE_FMT[role]
        assert representable(xq, ROLE_FMT[role]), (layer, role)
        seen.append((layer, role))

    outs = {}
    for n in GEMM_LAYERS:
        getattr(m, n).register_forward_hook(lambda mod, i, o, n=n: outs.__setitem__(n, o.detach()))
    with observe.observing(obs):
        m(torch.randint(0, 20, (4, 8))).square().mean().backward()
    active = ["conv1", "conv2"]
    assert sorted(seen) == sorted((n, role) for n in active for role in ROLE_FMT)
    for n in active:
        assert representable(outs[n], "e3m4")
    for n in ("qk", "pv"):  # recipe.attention is None: attention products stay FP32
        assert not representable(outs[n], "e3m4")
    for n in ("emb", "fc", "head"):  # exempt: FP32 outputs and gradients
        assert not representable(outs[n], "e3m4")
        assert not representable(getattr(m, n).weight.grad, "fp16")
    for n in ("conv1", "conv2"):
        assert representable(getattr(m, n).weight.grad, "fp16")


def test_exempt_patterns_and_nongemm_hook():
    torch.manual_seed(0)
    m = lowp.emulate(AllOps(), lowp.Recipe(input="bf16", exempt=("conv*", "q?"), nongemm="e4m3"))
    assert set(emulated_layers(m)) == {"emb", "fc", "head"}
    m2 = lowp.emulate(AllOps(), lowp.Recipe(input="bf16", attention="bf16", exempt=("conv*", "q?")))
    assert set(emulated_layers(m2)) == {"emb", "pv", "fc", "head"}
    out = {}
    m.norm.register_forward_hook(lambda mod, i, o: out.__setitem__("norm", o))
    x = torch.randint(0, 20, (2, 8))
    m(x).sum().backward()
    assert representable(out["norm"].detach(), "e4m3")
    assert m.norm.weight.grad is not None  # straight-through gradient
    lowp.restore(m)
    m(x)
    assert not representable(out["norm"].detach(), "e4m3")


def test_errors_name_the_bad_value():
    with pytest.raises(ValueError, match="known recipes: fp32, bf16"):
        lowp.emulate(nn.Linear(2, 2), "fp9")
    with pytest.raises(ValueError, match="unknown model transform 'relu6'"):
        lowp.emulate(nn.Linear(2, 2), lowp.Recipe(transforms=("relu6",)))
    with pytest.raises(TypeError, match="recipe is a name"):
        lowp.get_recipe(3)
