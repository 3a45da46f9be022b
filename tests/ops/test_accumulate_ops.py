"""Emulated GEMMs with format accumulation: forward and both backward GEMMs go through
lowp.ops.accumulate.matmul; convolutions via im2col."""
import pytest
import torch
import torch.nn.functional as F

import lowp
from lowp.ops import OpContext, emulated_conv1d, emulated_conv2d, emulated_linear, emulated_matmul

from lowp.ops import accumulate as acc


@pytest.fixture(autouse=True)
def _eager(monkeypatch):
    monkeypatch.setenv("LOWP_COMPILE", "0")


def grads(fn, *xs):
    xs = [x.clone().requires_grad_() for x in xs]
    y = fn(*xs)
    y.backward(torch.ones_like(y) * 0.37)
    return [y.detach()] + [x.grad for x in xs]


@pytest.mark.parametrize("case", ["linear", "conv1d", "conv2d", "matmul"])
def test_fp32_accumulation_matches_torch(case):
    """Plumbing check: accumulating in FP32 gives torch's result up to summation order, forward and backward."""
    torch.manual_seed(0)
    ctx = OpContext(lowp.Recipe(accumulate="fp32"))
    if case == "linear":
        x, w = torch.randn(3, 4, 10), torch.randn(5, 10)
        a, b = emulated_linear, F.linear
        got, ref = grads(lambda x, w: a(x, w, None, ctx), x, w), grads(lambda x, w: b(x, w), x, w)
    elif case == "conv1d":
        x, w = torch.randn(2, 3, 11), torch.randn(4, 3, 3)
        got = grads(lambda x, w: emulated_conv1d(x, w, None, ctx, 2, 1, 2), x, w)
        ref = grads(lambda x, w: F.conv1d(x, w, None, 2, 1, 2), x, w)
    elif case == "conv2d":
        x, w = torch.randn(2, 3, 7, 6), torch.randn(4, 3, 3, 2)
        got = grads(lambda x, w: emulated_conv2d(x, w, None, ctx, (2, 1), (1, 0), 1), x, w)
        ref = grads(lambda x, w: F.conv2d(x, w, None, (2, 1), (1, 0), 1), x, w)
    else:
        x, w = torch.randn(2, 5, 6), torch.randn(2, 6, 3)
        got = grads(lambda a, b: emulated_matmul(a, b, ctx), x, w)
        ref = grads(torch.matmul, x, w)
    for g, r in zip(got, ref):
        assert g.shape == r.shape
        torch.testing.assert_close(g, r, rtol=1e-5, atol=1e-5)


def test_linear_fp16_chunked_matches_accumulate_matmul():
    """Oracle: the three GEMMs written out with lowp.ops.accumulate.matmul on the rounded operands."""
    torch.manual_seed(1)
    x, w, dy = torch.randn(8, 40), torch.randn(6, 40), torch.randn(8, 6)
    r = lowp.Recipe(input="fp8-152", weight="fp8-152", grad_output="fp8-152", accumulate="fp16-169", chunk=8)
    ctx = OpContext(r)
    xx, ww = x.clone().requires_grad_(), w.clone().requires_grad_()
    y = emulated_linear(xx, ww, None, ctx)
    y.backward(dy)
    xq, wq, dyq = (lowp.quantize(t, "fp8-152") for t in (x, w, dy))
    mm = lambda a, b: acc.matmul(a, b, accumulate="fp16-169", chunk=8)  # noqa: E731
    assert torch.equal(y, mm(xq, wq.t()))
    assert torch.equal(xx.grad, mm(dyq, wq))
    assert torch.equal(ww.grad, mm(dyq.t(), xq))
    assert not torch.equal(y, xq @ wq.t())  # accumulation in (1,6,9) is visible
