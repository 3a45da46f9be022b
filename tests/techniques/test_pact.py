"""PACT: forward values on the k-bit grid, gradients w.r.t. x and alpha against the paper's formula and finite
differences, per-channel alpha, L2 penalty."""
import pytest
import torch

from lowp.techniques.pact import PACT, pact, pact_alphas, pact_penalty

pytestmark = pytest.mark.usefixtures("one_thread")  # restored after each test


def test_forward_values_hand_computed():
    x = torch.tensor([-1.0, 0.0, 0.4, 1.1, 2.0, 2.9, 3.0, 7.0])
    y = pact(x, torch.tensor(3.0), 2)  # grid step 3 / 3 = 1
    assert y.tolist() == [0.0, 0.0, 0.0, 1.0, 2.0, 3.0, 3.0, 3.0]
    y4 = pact(x, torch.tensor(3.0), 4)  # step 0.2
    exp = torch.round(torch.clamp(x, 0, 3) / 0.2) * 0.2
    torch.testing.assert_close(y4, exp)


def test_outputs_on_grid_and_bounded():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1000, generator=g) * 5
    for k in (1, 2, 3, 5, 8):
        a = 2.5
        y = pact(x, torch.tensor(a), k)
        j = y / (a / (2**k - 1))
        torch.testing.assert_close(j, torch.round(j), atol=1e-4, rtol=0)
        assert y.min() >= 0 and y.max() <= a + 1e-6
        assert len(torch.unique(y)) <= 2**k


def test_gradients_match_formula():
    x = torch.tensor([-2.0, -0.1, 0.0, 0.3, 1.7, 2.99, 3.0, 4.5, 9.0], requires_grad=True)
    alpha = torch.tensor(3.0, requires_grad=True)
    g = torch.arange(1.0, 10.0)
    (pact(x, alpha, 2) * g).sum().backward()
    inside = (x.detach() >= 0) & (x.detach() < 3)
    assert x.grad.tolist() == torch.where(inside, g, torch.zeros_like(g)).tolist()
    assert alpha.grad.item() == float(g[x.detach() >= 3].sum())  # 7 + 8 + 9


def test_alpha_gradient_equals_finite_difference_of_clip():
    """Straight-through: d y_q / d alpha equals the derivative of the un-rounded clip, checked by central
    differences of clip(x, 0, alpha) away from the kink, and the quantized output's alpha gradient agrees."""
    g = torch.Generator().manual_seed(1)
    x = (torch.rand(200, generator=g, dtype=torch.float64) * 8 - 2)
    x = x[(x - 3.0).abs() > 1e-3]
    w = torch.randn(len(x), generator=g, dtype=torch.float64)
    alpha = torch.tensor(3.0, dtype=torch.float64, requires_grad=True)
    (pact(x, alpha, 3) * w).sum().backward()
    h = 1e-6
    f = lambda a: (torch.clamp(torch.clamp(x, min=0), max=a) * w).sum()  # noqa: E731
    fd = (f(3.0 + h) - f(3.0 - h)) / (2 * h)
    assert alpha.grad.item() == pytest.approx(float(fd), rel=1e-6)


def test_x_gradient_finite_difference_of_clip():
    g = torch.Generator().manual_seed(2)
    x = (torch.rand(50, generator=g, dtype=torch.float64) * 6 - 1)
    x = x[((x - 2.0).abs() > 1e-3) & (x.abs() > 1e-3)].requires_grad_()
    pact(x, torch.tensor(2.0, dtype=torch.float64), 4).sum().backward()
    h = 1e-7
    fd = (torch.clamp(x.detach() + h, 0, 2) - torch.clamp(x.detach() - h, 0, 2)) / (2 * h)
    torch.testing.assert_close(x.grad, fd, atol=1e-6, rtol=0)


def test_per_channel_alpha_gradients_and_shapes():
    m = PACT(2, alpha_init=1.0, channels=3)
    with torch.no_grad():
        m.alpha.copy_(torch.tensor([1.0, 2.0, 3.0]))
    x = torch.full((2, 3, 4), 2.5, requires_grad=True)
    m(x).sum().backward()
    # channel 0 and 1 saturate (x >= alpha): 8 elements each; channel 2 does not
    assert m.alpha.grad.tolist() == [8.0, 8.0, 0.0]
    assert x.grad[:, 2].eq(1).all() and x.grad[:, :2].eq(0).all()
    lin = PACT(3, channels=4, channel_dim=-1)
    assert lin(torch.randn(5, 4)).shape == (5, 4)
    with pytest.raises(ValueError, match="channels"):
        PACT(2, channels=3)(torch.randn(2, 4, 5))


def test_alpha_decay_and_penalty():
    m = PACT(2, alpha_init=10.0, alpha_decay=0.5)
    m(torch.zeros(4)).sum().backward()  # nothing saturates: only the decay term
    assert m.alpha.grad.item() == pytest.approx(5.0)
    net = torch.nn.Sequential(PACT(2, alpha_init=2.0), torch.nn.Sequential(PACT(4, alpha_init=3.0, channels=2)))
    p = pact_penalty(net, 0.1)
    assert p.item() == pytest.approx(0.05 * (4 + 9 + 9))
    p.backward()
    assert net[0].alpha.grad.item() == pytest.approx(0.2)
    assert pact_alphas(net) == {"0": [2.0], "1.0": [3.0, 3.0]}
    assert pact_penalty(torch.nn.Linear(2, 2), 1.0).item() == 0.0


def test_nan_propagates_and_bad_args():
    assert torch.isnan(pact(torch.tensor([float("nan")]), torch.tensor(1.0), 2)).all()
    with pytest.raises(ValueError):
        PACT(0)
    with pytest.raises(ValueError):
        PACT(2, alpha_init=0.0)


def test_alpha_from_data_on_first_forward():
    """Default alpha_init="data": the first batch's 99.9th percentile of max(x, 0), per layer or per channel;
    set once (later batches and a loaded state do not reset it); a number keeps the paper's fixed start."""
    torch.manual_seed(0)
    x = torch.randn(64, 50) * 3
    m = PACT(4)
    assert not bool(m.alpha_set)
    m(x)
    assert m.alpha.item() == pytest.approx(torch.quantile(x.clamp(min=0), 0.999).item())
    m(x * 10)
    assert m.alpha.item() == pytest.approx(torch.quantile(x.clamp(min=0), 0.999).item())
    pc = PACT(4, channels=50, channel_dim=-1)
    pc(x)
    torch.testing.assert_close(pc.alpha.detach(), torch.quantile(x.clamp(min=0).t(), 0.999, dim=1))
    assert PACT(4, alpha_init=10.0)(x).max() <= 10.0 and PACT(4, alpha_init=10.0).alpha.item() == 10.0
    neg = PACT(4)
    neg(-x.abs())
    assert neg.alpha.item() == 1.0  # no positive activations: alpha 1
    with pytest.raises(ValueError, match="alpha_init"):
        PACT(4, alpha_init="median")
