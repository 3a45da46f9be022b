"""Accelerator recipes that need per-tensor scales and per-GEMM operand casts (lowp/recipes/hardware.py)."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import lowp
from lowp.ops import observe


@pytest.fixture(autouse=True)
def _eager(monkeypatch):
    monkeypatch.setenv("LOWP_COMPILE", "0")


class Attn(nn.Module):
    def __init__(self, d=64):
        super().__init__()
        self.qkv = nn.Linear(d, 3 * d)
        self.out = nn.Linear(d, d)

    def forward(self, x):
        q, k, v = self.qkv(x).chunk(3, -1)
        return self.out(F.scaled_dot_product_attention(q, k, v, is_causal=True))


@pytest.mark.parametrize("name", ["fp8-tensorwise", "fp8-current", "fp8-delayed", "mi300-fp8", "mxfp8", "mxfp4"])
def test_recipe_trains_a_step_and_covers_the_linear_gemms(name):
    torch.manual_seed(0)
    m = Attn()
    x = torch.randn(4, 32, 64)
    r = lowp.get_recipe(name)
    lowp.emulate(m, r)
    opt = lowp.LowpOptimizer(torch.optim.SGD(m.parameters(), lr=0.1), r)
    opt.zero_grad()
    opt.backward(m(x).square().mean())
    opt.step()
    assert all(torch.isfinite(p).all() for p in m.parameters())
    cov = lowp.coverage(m, x)
    lin = [row for row in cov.rows if row.op == "linear"]
    assert all(row.fwd_emulated and row.bwd_emulated for row in lin)
    att = [row for row in cov.rows if row.op.startswith("sdpa")]
    assert all(row.fwd_emulated == (r.attention is not None) for row in att)


def test_fp8_delayed_and_fnuz_settings():
    d = lowp.get_recipe("fp8-delayed")
    assert (d.input.scaling, d.input.history, d.input.margin, d.grad_output.format) == ("delayed", 1024, 0, "e5m2")
    mi = lowp.get_recipe("mi300-fp8")
    assert (mi.input.format, mi.grad_output.format) == ("e4m3fnuz", "e5m2fnuz")
    x = torch.randn(256, 64) * 1000
    m = lowp.emulate(nn.Linear(64, 64), "mi300-fp8")
    seen = {}
    with observe.observing(lambda layer, role, a, aq, fmt: seen.setdefault(role, aq)):
        m(x)
    assert seen["input"].abs().max() == 240  # saturating E4M3FNUZ in the format's own units (amax -> 240)


def test_mxfp8_blocks_each_gemm_operand_along_its_reduction_axis():
    """x for wgrad is blocked along the token axis M: with tokens of very different ranges the wgrad copy of x
    differs from the forward copy."""
    torch.manual_seed(1)
    x = torch.randn(64, 32) * torch.logspace(-4, 4, 64)[:, None]
    m = lowp.emulate(nn.Linear(32, 16), "mxfp8")
    seen = {}
    with observe.observing(lambda layer, role, a, aq, fmt: seen.setdefault(role, aq)):
        m(x.requires_grad_()).sum().backward()
    import dataclasses
    fmt = lowp.get_format("mxfp8_e4m3")
    assert torch.equal(seen["input"], lowp.quantize(x.detach(), dataclasses.replace(fmt, axis=-1)))
    assert torch.equal(seen["input_wgrad"], lowp.quantize(x.detach(), dataclasses.replace(fmt, axis=0)))
    assert not torch.equal(seen["input"], seen["input_wgrad"])
