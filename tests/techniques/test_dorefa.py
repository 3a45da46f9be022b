"""DoReFa quantizers: quantize_k, weights on known inputs, the 1-bit case, straight-through gradients."""
import math

import pytest
import torch

from lowp.techniques.dorefa import dorefa_weight, quantize_k, unit_clip_act

pytestmark = pytest.mark.usefixtures("one_thread")  # restored after each test


def test_quantize_k_values_and_ste():
    v = torch.tensor([0.0, 0.1, 0.16, 0.17, 0.5, 0.84, 1.0], requires_grad=True)
    q = quantize_k(v, 2)  # grid {0, 1/3, 2/3, 1}
    torch.testing.assert_close(q, torch.tensor([0.0, 0.0, 0.0, 1 / 3, 2 / 3, 1.0, 1.0]))
    q.sum().backward()
    assert v.grad.eq(1).all()


def test_dorefa_weight_known_values():
    w = torch.tensor([-2.0, -0.5, 0.0, 0.25, 1.0])
    t = [math.tanh(v) for v in w.tolist()]
    m = max(abs(v) for v in t)
    for k in (2, 3, 4):
        n = 2**k - 1
        exp = [2 * round((v / (2 * m) + 0.5) * n) / n - 1 for v in t]
        torch.testing.assert_close(dorefa_weight(w, k), torch.tensor(exp))
    # the largest |w| maps to +-1 exactly; values in [-1, 1]; 2^k levels at most
    wq = dorefa_weight(torch.randn(1000), 3)
    assert wq.abs().max() == 1 and len(torch.unique(wq)) <= 8


def test_dorefa_weight_gradient_through_tanh():
    """STE only at the rounding: the gradient equals autograd's of the un-rounded expression."""
    w = torch.tensor([-0.3, 0.1, 0.7, -1.5], dtype=torch.float64, requires_grad=True)
    dorefa_weight(w, 4).pow(2).sum().backward()
    g_ste = w.grad.clone()
    w2 = w.detach().clone().requires_grad_()
    wq = dorefa_weight(w2.detach(), 4)  # forward value (constant)
    t = torch.tanh(w2)
    un = 2 * (t / (2 * t.abs().max()) + 0.5) - 1
    (2 * wq * un).sum().backward()  # d/dw of sum(wq^2) with d wq / d un = 1
    torch.testing.assert_close(g_ste, w2.grad)


def test_one_bit_case():
    w = torch.tensor([-2.0, -0.5, 0.0, 0.5, 1.0], requires_grad=True)
    e = w.detach().abs().mean()
    q = dorefa_weight(w, 1)
    torch.testing.assert_close(q, torch.stack([-e, -e, e, e, e]))
    (q * torch.arange(5.0)).sum().backward()
    assert w.grad.tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]  # identity (E|w| is a constant)


def test_unit_clip_act():
    x = torch.tensor([-1.0, 0.2, 0.5, 0.9, 3.0], requires_grad=True)
    y = unit_clip_act(x, 1)
    assert y.tolist() == [0.0, 0.0, 0.0, 1.0, 1.0]  # 0.5 ties to even -> 0
    y.sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 0.0]


def test_bad_bits():
    for b in (0, 17, 2.0, True):
        with pytest.raises(ValueError):
            dorefa_weight(torch.ones(2), b)
