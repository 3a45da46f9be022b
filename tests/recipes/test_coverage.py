"""lowp.coverage: rows per GEMM-like call, an independent aten count, and nothing changed in the model."""
import pytest
import torch
from torch import nn

import lowp
from lowp.recipes.emulate import capture_state


@pytest.fixture(autouse=True)
def _eager(monkeypatch):
    monkeypatch.setenv("LOWP_COMPILE", "0")


class Net(nn.Module):
    def __init__(self, tensordot=False):
        super().__init__()
        self.fc = nn.Linear(16, 32)
        self.w = nn.Parameter(torch.randn(32, 8) * 0.1)
        self.tensordot = tensordot

    def forward(self, x):
        h = torch.relu(self.fc(x))
        return torch.tensordot(h, self.w, dims=1) if self.tensordot else h @ self.w


def test_rows_flops_and_agreement():
    x = torch.randn(4, 16)
    c = lowp.coverage(Net(), x, recipe="bf16")
    assert [(r.name, r.op) for r in c.rows] == [("fc", "linear"), ("w", "matmul")]
    fc, w = c.rows
    assert fc.fwd_flops == 2 * 4 * 16 * 32 and fc.bwd_flops == 2 * 4 * 16 * 32  # x needs no gradient: wgrad only
    assert w.fwd_flops == 2 * 4 * 32 * 8 and w.bwd_flops == 2 * w.fwd_flops
    assert c.total_flops == c.measured_flops and c.emulated_fraction == 1.0
    assert fc.formats["input"] == "bf16"
    d = c.to_dict()
    assert d["emulated_fraction"] == 1.0 and len(d["rows"]) == 2


def test_a_gemm_lowp_does_not_intercept_is_reported_not_hidden():
    c = lowp.coverage(Net(tensordot=True), torch.randn(4, 16), recipe="bf16")
    missed = [r for r in c.rows if r.reason.startswith("not captured")]
    assert len(missed) == 1 and missed[0].name == "(model)" and missed[0].fwd_flops == 2 * 4 * 32 * 8
    assert 0 < c.emulated_fraction < 1
    assert "not captured: aten.mm" in c.table()


def test_model_state_is_kept():
    m = Net()
    x = torch.randn(4, 16)
    m(x).sum().backward()
    g = m.fc.weight.grad.clone()
    rng = torch.get_rng_state()
    lowp.coverage(m, x, recipe="fp8-e5m2")  # not emulated before: restored after
    assert capture_state(m) is None and type(m.fc) is nn.Linear
    assert torch.equal(m.fc.weight.grad, g) and torch.equal(torch.get_rng_state(), rng)
    lowp.emulate(m, "bf16")
    c = lowp.coverage(m, x, recipe="fp32")  # emulated before: the previous recipe is re-applied
    assert c.emulated_fraction == 0.0 and capture_state(m).recipe.name == "bf16"
    assert lowp.coverage(m, x).recipe == "bf16"  # default: the model's recipe


def test_no_backward_when_asked_or_without_float_output():
    c = lowp.coverage(Net(), torch.randn(4, 16), recipe="bf16", backward=False)
    assert c.measured_backward == 0 and c.measured_forward > 0
    emb = nn.Embedding(10, 4)
    c = lowp.coverage(emb, torch.tensor([1, 2]), recipe="bf16")
    assert c.rows[0].op == "embedding" and c.total_flops == 0 and c.emulated_fraction == 1.0
