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


NEW = ["fp8-rowwise", "fp8-rowwise-gw-hp", "fp8-blockwise", "nvfp4", "nvfp4+no-rht", "nvfp4+no-sr", "nvfp4+no-2d",
       "b200-mxfp8", "b200-nvfp4", "deepseek-v3-fp8", "h100-fp8"]


@pytest.mark.parametrize("name", NEW)
def test_block_and_fp4_recipes_train_a_step(name):
    test_recipe_trains_a_step_and_covers_the_linear_gemms(name)


def test_nvfp4_rotates_only_the_wgrad_operands():
    """The observer sees the wgrad casts taken from RHT-rotated tensors (along the tokens), every other cast from
    the plain tensor; with FP32 wgrad casts the rotated product equals dyᵀ·x to FP32 rounding."""
    torch.manual_seed(2)
    x, dy = torch.randn(64, 32), torch.randn(64, 16)
    m = lowp.emulate(nn.Linear(32, 16), "nvfp4")
    w = m.weight.detach().clone()
    seen = {}
    with observe.observing(lambda layer, role, a, aq, fmt: seen.setdefault(role, a)):
        m(x.clone().requires_grad_()).backward(dy)
    rht = lowp.RandomHadamard(16)
    assert torch.equal(seen["input"], x) and torch.equal(seen["weight"], w.t())
    assert torch.equal(seen["grad_output"], dy) and torch.equal(seen["weight_dgrad"], w.t())
    assert torch.equal(seen["input_wgrad"], rht.apply(x, 0)) and torch.equal(seen["grad_output_wgrad"],
                                                                               rht.apply(dy, 0))
    hp = lowp.Recipe(input="fp32", weight="fp32", input_wgrad="fp32", grad_output_wgrad="fp32", wgrad_hadamard=16)
    m2 = lowp.emulate(nn.Linear(32, 16), hp)
    m2(x).backward(dy)
    torch.testing.assert_close(m2.weight.grad, dy.t() @ x, rtol=1e-5, atol=1e-5)
    # a batch whose token count is not a multiple of the block (a last batch, a 2-sample dry run): both wgrad
    # operands are zero-padded before the rotation, and dW is still dyᵀ·x
    m2.weight.grad = None
    m2(x[:5]).backward(dy[:5])
    torch.testing.assert_close(m2.weight.grad, dy[:5].t() @ x[:5], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="wgrad_hadamard rotates"):
        lowp.emulate(nn.Linear(4, 4), lowp.Recipe(input="bf16", wgrad_hadamard=16))
    with pytest.raises(ValueError, match="power of two"):
        lowp.Recipe(wgrad_hadamard=12)


def test_nvfp4_ablation_modifiers():
    base = lowp.get_recipe("nvfp4")
    assert base.wgrad_hadamard == 16 and base.grad_output.rounding == "stochastic"
    assert base.weight.format == "nvfp4-16x16"
    assert lowp.get_recipe("nvfp4+no-rht").wgrad_hadamard is None
    assert lowp.get_recipe("nvfp4+no-sr").grad_output_wgrad.rounding == "nearest"
    no2d = lowp.get_recipe("nvfp4+no-2d")
    assert no2d.weight.format == no2d.weight_dgrad.format == "nvfp4"
    assert lowp.get_recipe("nvfp4+no-rht+no-sr+no-2d").name == "nvfp4+no-rht+no-sr+no-2d"


def test_forward_and_backward_accumulators():
    """accumulate applies to the forward GEMM, accumulate_backward to dgrad/wgrad (h100-fp8: fast forward,
    FP32 backward); checked against lowp.matmul on the same rounded operands."""
    torch.manual_seed(3)
    x, w, dy = torch.rand(8, 256) + 0.5, torch.rand(4, 256) + 0.5, torch.randn(8, 4)
    ctx = lowp.ops.OpContext(lowp.Recipe(input="bf16", weight="bf16", accumulate="tc8",
                                         accumulate_backward="fp32"))
    xs, ws = x.clone().requires_grad_(), w.clone().requires_grad_()
    y = lowp.ops.emulated_linear(xs, ws, None, ctx)
    y.backward(dy)
    xq, wq = lowp.quantize(x, "bf16"), lowp.quantize(w, "bf16")
    assert torch.equal(y.detach(), lowp.matmul(xq, wq.t(), accumulate="tc8"))
    assert not torch.equal(y.detach(), xq @ wq.t())  # the 8-bit accumulator is visible
    assert torch.equal(xs.grad, dy @ wq)
    # the op computes Wᵀ's gradient xqᵀ·dy in FP32 and transposes it: compared in that orientation, since BLAS may
    # order the FP32 sum of dyᵀ·xq differently (it does on an AVX2 EPYC: 641 of 1024 elements differ)
    assert torch.equal(ws.grad, (xq.t() @ dy).t())
    assert not torch.equal(ws.grad, lowp.matmul(xq.t(), dy, accumulate="tc8").t())  # not the forward's accumulator
    h = lowp.get_recipe("h100-fp8")
    assert (h.accumulate, h.accumulate_backward, h.input.scaling, h.input.history) == ("tc14", "fp32", "delayed",
                                                                                      1024)
