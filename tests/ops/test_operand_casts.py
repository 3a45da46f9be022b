"""Per-GEMM operand casts (lowp/ops/functions._CastGemm): each operand of the forward, dgrad and wgrad GEMMs
quantized from the high-precision tensor along the reduction axis of the GEMM that consumes it.

Oracle: the three GEMMs written out with lowp.quantize and an MX format whose ``axis`` is set explicitly."""
import copy
import dataclasses

import pytest
import torch
import torch.nn.functional as F

import lowp
from lowp.ops import OpContext, emulated_linear, observe


@pytest.fixture(autouse=True)
def _eager(monkeypatch):
    monkeypatch.setenv("LOWP_COMPILE", "0")


MX = "mxfp8_e4m3"


def mx(axis):
    return dataclasses.replace(lowp.get_format(MX), axis=axis)


def casts_recipe(**kw):
    r = dict(input=MX, weight=MX, grad_output=MX, weight_dgrad=MX, input_wgrad=MX, grad_output_wgrad=MX)
    r.update(kw)
    return lowp.Recipe(name="casts", **r)


def skewed(m, k, seed):
    """Rows and columns with very different ranges: blocks along rows and along columns differ."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(m, k, generator=g) * torch.logspace(-3, 3, m)[:, None] * torch.logspace(2, -2, k)[None, :]


def test_six_casts_match_the_written_out_gemms():
    x, w, dy = skewed(64, 96, 0), skewed(32, 96, 1), skewed(64, 32, 2)
    ctx = OpContext(casts_recipe(), name="fc")
    xs, ws = x.clone().requires_grad_(), w.clone().requires_grad_()
    y = emulated_linear(xs, ws, None, ctx)
    y.backward(dy)
    q = lowp.quantize
    ref_y = q(x, mx(-1)) @ q(w, mx(-1)).t()                    # forward: both along K
    ref_dx = q(dy, mx(-1)) @ q(w, mx(0))                        # dgrad: dy and w along N
    ref_dw = q(dy, mx(0)).t() @ q(x, mx(0))                     # wgrad: dy and x along M (torch's dyᵀ·x)
    assert torch.equal(y.detach(), ref_y)
    assert torch.equal(xs.grad, ref_dx) and torch.equal(ws.grad, ref_dw)
    # orientation matters on this data: quantizing along the forward axis gives other bits
    assert not torch.equal(q(x, mx(0)), q(x, mx(-1)))
    assert not torch.equal(ws.grad, q(dy, mx(-1)).t() @ q(x, mx(-1)))


def test_observer_sees_each_cast_once_along_its_axis():
    x, w, dy = skewed(64, 96, 3), skewed(32, 96, 4), skewed(64, 32, 5)
    ctx = OpContext(casts_recipe(), name="fc")
    seen = {}
    with observe.observing(lambda layer, role, a, aq, fmt: seen.setdefault(role, []).append((a, aq))):
        xs, ws = x.clone().requires_grad_(), w.clone().requires_grad_()
        emulated_linear(xs, ws, None, ctx).backward(dy)
    assert sorted(seen) == sorted(["input", "weight", "grad_output", "weight_dgrad", "input_wgrad",
                                   "grad_output_wgrad"])
    assert all(len(v) == 1 for v in seen.values())
    (a, aq), = seen["input_wgrad"]
    assert torch.equal(aq, lowp.quantize(x, mx(0)))  # x along the token axis M for wgrad


def test_elementwise_formats_give_the_one_cast_bits():
    """Re-quantizing from high precision with a deterministic elementwise format gives the same bits as reusing
    the forward copy: a recipe that names every cast equals the one-cast recipe."""
    torch.manual_seed(6)
    x, w, dy = torch.randn(4, 5, 24), torch.randn(16, 24), torch.randn(4, 5, 16)
    base = lowp.get_recipe("bf16")
    full = base.replace(weight_dgrad="bf16", input_wgrad="bf16", grad_output_wgrad="bf16")
    outs = []
    for r in (base, full):
        ctx = OpContext(r, name="fc")
        xs, ws = (t.clone().requires_grad_() for t in (x, w))
        y = emulated_linear(xs, ws, None, ctx)  # (a bias gradient differs: FP32 sum of the unrounded dy)
        y.backward(dy)
        outs.append((y.detach(), xs.grad, ws.grad))
    assert OpContext(full).per_gemm and not OpContext(base).per_gemm
    for a, c in zip(*outs):
        assert torch.equal(a, c)


def test_high_precision_wgrad():
    """input_wgrad and grad_output_wgrad in FP32 (torchao's fp8-rowwise-gw-hp): dW is the FP32 product."""
    x, w, dy = torch.randn(8, 12), torch.randn(6, 12), torch.randn(8, 6)
    ctx = OpContext(lowp.Recipe(input="e4m3", weight="e4m3", grad_output="e5m2", input_wgrad="fp32",
                                grad_output_wgrad="fp32"))
    xs, ws = x.clone().requires_grad_(), w.clone().requires_grad_()
    emulated_linear(xs, ws, None, ctx).backward(dy)
    assert torch.equal(ws.grad, dy.t() @ x)
    assert torch.equal(xs.grad, lowp.quantize(dy, "e5m2") @ lowp.quantize(w, "e4m3"))


def test_captured_addmm_uses_the_casts():
    """HF Conv1D-style addmm(b, x, W) with W (in, out): the weight's dgrad copy is blocked along N."""
    x, w, dy = skewed(64, 96, 7), skewed(96, 32, 8), skewed(64, 32, 9)

    class C(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(w.clone())
            self.bias = torch.nn.Parameter(torch.zeros(32))

        def forward(self, t):
            return torch.addmm(self.bias, t, self.weight)

    m = lowp.emulate(C(), casts_recipe())
    xs = x.clone().requires_grad_()
    m(xs).backward(dy)
    q = lowp.quantize
    assert torch.equal(xs.grad, q(dy, mx(-1)) @ q(w, mx(-1)).t())
    assert torch.equal(m.weight.grad, q(x, mx(0)).t() @ q(dy, mx(0)))  # addmm's own orientation: xᵀ·dy


def test_bias_role_and_cpu_bf16_matches_autocast():
    """The one real-hardware conformance check here: oneDNN's BF16 GEMM under torch.autocast("cpu") adds a BF16
    bias and rounds once. cpu-bf16 (BF16 operands and bias, one output rounding) agrees with it on >= 99.9% of the
    outputs of a 256->512 Linear at batch 128 (FP32 summation order differs); the bf16 recipe (FP32 bias) on fewer."""
    torch.manual_seed(10)
    lin = torch.nn.Linear(256, 512)
    lin.bias.data *= 20  # biases large enough for their BF16 rounding to matter
    x = torch.randn(128, 256)
    with torch.autocast("cpu", torch.bfloat16):
        native = lin(x).float()
    agree = {}
    for name in ("cpu-bf16", "bf16"):
        ctx = OpContext(lowp.get_recipe(name))
        y = emulated_linear(x, lin.weight, lin.bias, ctx)
        agree[name] = (y == native).float().mean().item()
    assert agree["cpu-bf16"] >= 0.999, agree
    assert agree["bf16"] < agree["cpu-bf16"]
    # backward: dx, dW and the bias gradient as autocast's BF16 backward rounds them
    dy = torch.randn(128, 512)
    xs = x.clone().requires_grad_()
    with torch.autocast("cpu", torch.bfloat16):
        out = lin(xs)
    out.float().backward(dy)
    emu_lin = lowp.emulate(copy.deepcopy(lin), "cpu-bf16")
    xe = x.clone().requires_grad_()
    emu_lin(xe).backward(dy)
    for a, b in ((xe.grad, xs.grad), (emu_lin.weight.grad, lin.weight.grad), (emu_lin.bias.grad, lin.bias.grad)):
        assert (a == b).float().mean().item() >= 0.999
    conv = torch.nn.Conv2d(16, 32, 3, padding=1)
    xc = torch.randn(8, 16, 12, 12)
    with torch.autocast("cpu", torch.bfloat16):
        nat = conv(xc).float()
    emu = lowp.emulate(conv, "cpu-bf16")(xc)
    assert (emu == nat).float().mean().item() >= 0.999


def test_per_gemm_refuses_mismatched_batches():
    ctx = OpContext(casts_recipe(), name="mm")
    from lowp.ops.functions import cast_gemm
    with pytest.raises(NotImplementedError, match="equal batch shapes"):
        cast_gemm(torch.randn(2, 3, 4, 32), torch.randn(3, 32, 5), ctx)
    y = cast_gemm(torch.randn(2, 4, 32), torch.randn(2, 32, 5), ctx)
    assert y.shape == (2, 4, 5) and F.relu(y).shape == y.shape
