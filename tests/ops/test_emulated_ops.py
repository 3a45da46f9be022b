"""Emulated ops against independent oracles: each role rounded once, where the recipe says, forward and backward.

Oracle: quantize every operand with lowp.quantize, run the *plain* torch op on the rounded values with autograd,
round the error before backpropagating and the two backward GEMM results after; the emulated op must agree bit
for bit."""
import pytest
import torch
import torch.nn.functional as F

import lowp
from lowp.ops import OpContext, emulated_conv1d, emulated_conv2d, emulated_embedding, emulated_linear, \
    emulated_matmul, observe
from lowp.scaled_quantizer import ScaledQuantizer


@pytest.fixture(autouse=True)
def _eager(monkeypatch):
    monkeypatch.setenv("LOWP_COMPILE", "0")  # keep tests fast: no torch.compile warm-up


ROLE_FMT = dict(input="e4m3", weight="e5m2", output="e3m4", grad_output="e5m2", grad_input="bf16", grad_weight="fp16")


def recipe(**kw):
    d = {k: lowp.TensorSpec(v) for k, v in ROLE_FMT.items()}
    d.update(kw)
    return lowp.Recipe(name="roles", **d)


def q(x, role):
    return lowp.quantize(x, ROLE_FMT[role])


def bits_equal(a, b):
    return a.shape == b.shape and torch.equal(a.view(torch.int32), b.view(torch.int32))


def oracle(fn, x, w, dy, wrt_x=True):
    """Plain torch op on rounded operands; returns (y, dx, dw) with every role rounded as ROLE_FMT says."""
    xq = q(x, "input").requires_grad_() if wrt_x else x
    wq = q(w, "weight").requires_grad_()
    y = fn(xq, wq)
    yq = q(y.detach(), "output")
    dyq = q(dy, "grad_output")
    grads = torch.autograd.grad(y, [xq, wq] if wrt_x else [wq], dyq)
    dx = q(grads[0], "grad_input") if wrt_x else None
    dw = q(grads[-1], "grad_weight")
    return yq, dx, dw


def run(op, x, w, dy):
    x = x.clone().requires_grad_(x.is_floating_point())
    w = w.clone().requires_grad_()
    y = op(x, w)
    y.backward(dy)
    return y.detach(), x.grad, w.grad


CASES = {
    "linear": (lambda: (torch.randn(6, 3, 10), torch.randn(7, 10)), lambda x, w: F.linear(x, w),
               lambda ctx: (lambda x, w: emulated_linear(x, w, None, ctx))),
    "conv1d": (lambda: (torch.randn(2, 4, 9), torch.randn(5, 4, 3)), lambda x, w: F.conv1d(x, w, padding=1),
               lambda ctx: (lambda x, w: emulated_conv1d(x, w, None, ctx, 1, 1))),
    "conv2d": (lambda: (torch.randn(2, 3, 6, 5), torch.randn(4, 3, 3, 3)), lambda x, w: F.conv2d(x, w, stride=2),
               lambda ctx: (lambda x, w: emulated_conv2d(x, w, None, ctx, 2, 0))),
    "matmul": (lambda: (torch.randn(2, 3, 5, 6), torch.randn(2, 3, 6, 4)), torch.matmul,
               lambda ctx: (lambda a, b: emulated_matmul(a, b, ctx))),
}


@pytest.mark.parametrize("name", list(CASES))
def test_every_role_rounded_once_matches_oracle(name):
    make, plain, emu = CASES[name]
    torch.manual_seed(0)
    x, w = make()
    ctx = OpContext(recipe(), name=name)
    with torch.no_grad():
        dy = torch.randn_like(plain(x, w))
    seen = []
    with observe.observing(lambda layer, role, a, aq, fmt: seen.append((layer, role))):
        y, dx, dw = run(emu(ctx), x, w, dy)
    ry, rdx, rdw = oracle(plain, x, w, dy)
    assert bits_equal(y, ry) and bits_equal(dx, rdx) and bits_equal(dw, rdw)
    assert sorted(seen) == sorted((name, r) for r in ROLE_FMT)  # each role exactly once
    # and the rounding is not vacuous: the FP32 op differs
    assert not torch.equal(y, plain(x, w).detach())


def test_embedding_roles():
    torch.manual_seed(1)
    w = torch.randn(11, 6)
    idx = torch.tensor([[1, 3, 3], [0, 10, 1]])
    dy = torch.randn(2, 3, 6)
    ctx = OpContext(recipe(), name="emb")
    seen = []
    with observe.observing(lambda layer, role, a, aq, fmt: seen.append(role)):
        y, _, dw = run(lambda i, ww: emulated_embedding(i, ww, ctx), idx, w, dy)
    ry, _, rdw = oracle(lambda i, ww: F.embedding(i, ww), idx, w, dy, wrt_x=False)
    assert bits_equal(y, ry) and bits_equal(dw, rdw)
    assert sorted(seen) == sorted(["weight", "output", "grad_output", "grad_weight"])


def test_unset_roles_are_plain_torch():
    torch.manual_seed(2)
    x, w, b = torch.randn(4, 5, requires_grad=True), torch.randn(3, 5, requires_grad=True), torch.randn(3)
    ctx = OpContext(lowp.Recipe(grad_output="e5m2"))
    y = emulated_linear(x, w, b, ctx)
    assert torch.equal(y, F.linear(x, w, b))  # forward untouched
    dy = torch.randn(4, 3)
    y.backward(dy)
    assert torch.equal(x.grad, q(dy, "grad_output") @ w.detach())


def test_fp32_format_is_identity_and_costs_nothing():
    ctx = OpContext(lowp.Recipe(input="fp32", weight="fp32"))
    assert ctx.specs == {}
    x = torch.randn(3, 4, requires_grad=True)
    assert emulated_matmul(x, x.t(), ctx).grad_fn.name().startswith("Mm")


@pytest.mark.parametrize("fmt", ["bf16", "fp16"])
def test_native_cast_fast_path_is_bit_exact(fmt):
    torch.manual_seed(3)
    specials = torch.tensor([0.0, -0.0, float("inf"), -float("inf"), float("nan"), 65504.0, 65519.99, 65520.0,
                             3e38, 1e-40, -1e-45, 2.0**-24, 2.0**-25, 3 * 2.0**-26, 2.0**-133])
    x = torch.cat([torch.randn(20000) * 10.0 ** torch.randint(-9, 6, (20000,)), specials,
                   torch.randint(-2**31, 2**31 - 1, (20000,), dtype=torch.int32).view(torch.float32)])
    got = ScaledQuantizer(fmt).round(x)
    ref = lowp.quantize(x, fmt)
    nan = torch.isnan(ref)
    assert torch.equal(torch.isnan(got), nan)
    assert torch.equal(got[~nan].view(torch.int32), ref[~nan].view(torch.int32))


def test_observer_sees_format_units_and_nothing_without_observers(monkeypatch):
    calls = []
    monkeypatch.setattr(observe, "notify", lambda *a: calls.append(a))
    ctx = OpContext(lowp.Recipe(input="e4m3"))
    emulated_matmul(torch.randn(3, 4), torch.randn(4, 2), ctx)
    assert calls == []  # no observer registered: notify is never called


def test_block_format_blocks_along_reduction_axis():
    """A conv weight in MXFP8 is blocked along C_in·kh·kw (one block of 32 here), not along kw."""
    torch.manual_seed(4)
    w = torch.randn(2, 8, 2, 2)  # K = 32
    w[0, 0, 0, 0] = 1e6  # one large value sets the shared scale of row 0's single block
    ctx = OpContext(lowp.Recipe(weight="mxfp8_e4m3"))
    got = ctx.quantize("weight", w, 0, -1, flatten=True)
    ref = lowp.quantize(w.reshape(2, 32), "mxfp8_e4m3").reshape(w.shape)
    assert torch.equal(got, ref)
    assert (got[0].flatten()[1:] == 0).sum() >= 25  # small values of row 0 flushed by the shared scale
    assert not torch.equal(got, lowp.quantize(w, "mxfp8_e4m3"))  # blocks along kw would keep them


def test_errors():
    with pytest.raises(ValueError, match="scaling"):
        OpContext(lowp.Recipe(input=lowp.TensorSpec("dfp16", scaling="current")))
    with pytest.raises(ValueError, match="known formats"):
        lowp.TensorSpec("e9m9")


def _scaled(fmt, rounding="nearest"):
    return lowp.TensorSpec(fmt, rounding=rounding, saturate=True, scaling="current",
                           rand_bits=8 if rounding == "stochastic" else None)


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("compiled", ["0", "1"])
def test_operand_pairs_in_one_call_keep_the_bits_and_the_stochastic_order(monkeypatch, name, compiled):
    """Both GEMM operands are rounded by one node (one compiled call where both take a short path): the bits of
    rounding each on its own, the stochastic gradient keys drawn as autograd ran the two roles (dW's, then dX's),
    every gradient right, and the forward operand pair one compiled call."""
    from lowp.formats import dispatch

    monkeypatch.setenv("LOWP_COMPILE", compiled)
    specs = dict(input=_scaled("e4m3"), weight=_scaled("e4m3"), grad_output=_scaled("e5m2"),
                 grad_input=_scaled("e5m2", "stochastic"), grad_weight=_scaled("e4m3", "stochastic"))
    make, plain, emu = CASES[name]
    torch.manual_seed(0)
    x, w = make()
    with torch.no_grad():
        dy = torch.randn_like(plain(x, w)) * 1e-3
    ctx = OpContext(lowp.Recipe(name="pairs", **specs), name=name)
    xg, wg = x.clone().requires_grad_(), w.clone().requires_grad_()
    before = dispatch.compiled_calls
    y = emu(ctx)(xg, wg)
    assert dispatch.compiled_calls - before == (1 if compiled == "1" else 0)
    torch.manual_seed(9)
    y.backward(dy)
    # oracle: each role on its own (eager quantizers), dW's key drawn first
    monkeypatch.setenv("LOWP_COMPILE", "0")
    Q = {r: ScaledQuantizer.from_spec(s) for r, s in specs.items()}
    xq, wq = Q["input"](x).requires_grad_(), Q["weight"](w).requires_grad_()
    yr = plain(xq, wq)
    gx, gw = torch.autograd.grad(yr, [xq, wq], Q["grad_output"](dy))
    torch.manual_seed(9)
    rdw = Q["grad_weight"](gw)
    rdx = Q["grad_input"](gx)
    assert bits_equal(y.detach(), yr.detach()) and bits_equal(wg.grad, rdw) and bits_equal(xg.grad, rdx)


def test_an_operand_without_gradient_gets_none_and_costs_no_gemm():
    """Only the weight needs a gradient (a first layer's data input): the pair node gives the input's rounded copy
    no gradient (as a lone role rounding would), so the GEMM does not compute dX."""
    from lowp.ops.functions import pair_q

    ctx = OpContext(lowp.Recipe(name="pairs", input=_scaled("e4m3"), weight=_scaled("e4m3")), name="lin")
    x, w = torch.randn(4, 8), torch.randn(3, 8, requires_grad=True)
    xq, wq = pair_q(x, w, ctx, ("input", "grad_input"), ("weight", "grad_weight"))
    assert not xq.requires_grad and wq.requires_grad and wq.grad_fn is not None
    y = emulated_linear(x, w, None, ctx)
    y.sum().backward()
    assert x.grad is None and w.grad is not None
