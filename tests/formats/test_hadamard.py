"""Random Hadamard transform: orthogonal exactly, product-preserving along the reduction axis, seeded signs; the
butterfly's bits against a plain float32 loop."""
import numpy as np
import pytest
import torch

from lowp.formats import RandomHadamard
from lowp.formats.hadamard import TE_WGRAD_SIGNS, sylvester


def test_h_ht_is_identity_exactly():
    for rht in (RandomHadamard(), RandomHadamard(seed=1), RandomHadamard(64, seed=2), RandomHadamard(4, seed=0)):
        h = rht.matrix()
        n = rht.block
        assert set(h.abs().unique().tolist()) == {n ** -0.5}  # exactly ±1/√n (a power of two for n = 4^k)
        assert torch.equal(h @ h.T, torch.eye(n)) and torch.equal(h.T @ h, torch.eye(n))


def test_matrix_is_quarter_diag_signs_sylvester():
    h16 = sylvester(16)
    assert torch.equal(h16 @ h16.T, 16 * torch.eye(16))
    assert torch.equal(h16[1, :4], torch.tensor([1.0, -1.0, 1.0, -1.0]))
    h = RandomHadamard().matrix()
    assert torch.equal(h, 0.25 * torch.diag(torch.tensor(TE_WGRAD_SIGNS, dtype=torch.float32)) @ h16)


def test_signs_reproducible_from_seed():
    a, b, c = RandomHadamard(seed=5), RandomHadamard(seed=5), RandomHadamard(seed=6)
    assert torch.equal(a.sign_vector(), b.sign_vector())
    assert not torch.equal(a.sign_vector(), c.sign_vector())
    assert set(a.sign_vector().tolist()) <= {1.0, -1.0}
    assert RandomHadamard(signs=(1,) * 16).sign_vector().tolist() == [1.0] * 16


@pytest.mark.parametrize("seed", [None, 3])
def test_rotating_both_operands_leaves_the_product(seed):
    """dW = dYᵀ·X reduces over the token axis M: rotating dY and X along M in blocks of 16 leaves the product
    equal in exact arithmetic; in float64 to 1e-12 relative, in FP32 to FP32 rounding (bound: a few
    K·eps·|dY|ᵀ|X|)."""
    g = torch.Generator().manual_seed(0)
    m, n, k = 256, 24, 40
    dy = torch.randn(m, n, generator=g)
    x = torch.randn(m, k, generator=g) * torch.exp2(torch.randint(-8, 8, (m, 1), generator=g).float())
    rht = RandomHadamard(seed=seed)
    dyr, xr = rht.apply(dy, axis=0), rht.apply(x, axis=0)
    assert not torch.allclose(dyr, dy)
    exact = dy.double().T @ x.double()
    rot64 = rht.apply(dy.double(), 0).T @ rht.apply(x.double(), 0)
    assert float((rot64 - exact).abs().max()) <= 1e-12 * float(exact.abs().max())
    bound = (dy.abs().double().T @ x.abs().double()) * (4 * m * torch.finfo(torch.float32).eps)
    assert bool(((dyr.T @ xr).double() - exact).abs().le(bound).all())
    assert bool(((dy.T @ x).double() - exact).abs().le(bound).all())


def test_apply_axis_and_errors():
    x = torch.randn(3, 32, 5)
    rht = RandomHadamard()
    y = rht.apply(x, axis=1)
    assert torch.allclose(y[1, :16, 2], x[1, :16, 2] @ rht.matrix(), atol=1e-6, rtol=1e-6)
    assert torch.allclose(y[1, 16:, 2], x[1, 16:, 2] @ rht.matrix(), atol=1e-6, rtol=1e-6)
    assert torch.allclose(y.norm(), x.norm(), rtol=1e-5)
    with pytest.raises(ValueError, match="multiple of the block"):
        rht.apply(torch.randn(4, 20))
    with pytest.raises(ValueError, match="power of two"):
        RandomHadamard(12, seed=0)
    with pytest.raises(ValueError, match="signs"):
        RandomHadamard(32)


def test_pad_zero_extends_the_axis_and_keeps_the_product():
    """``pad=True``: a length that is not a multiple of the block is zero-padded to one first (exact: the padded
    block equals the rotation of [x; 0]), and rotating both operands that way leaves aᵀg unchanged (float64)."""
    rht = RandomHadamard()
    torch.manual_seed(5)
    a, g = torch.randn(2, 21, 7, dtype=torch.float64), torch.randn(2, 21, 3, dtype=torch.float64)
    ar, gr = rht.apply(a, -2, pad=True), rht.apply(g, -2, pad=True)
    assert ar.shape == (2, 32, 7) and gr.shape == (2, 32, 3)
    padded = torch.cat([a, torch.zeros(2, 11, 7, dtype=torch.float64)], dim=1)
    assert torch.equal(ar, rht.apply(padded, -2))
    torch.testing.assert_close(ar.transpose(-1, -2) @ gr, a.transpose(-1, -2) @ g, rtol=0, atol=1e-13)
    assert torch.equal(rht.apply(a[:, :16], -2, pad=True), rht.apply(a[:, :16], -2))  # a multiple: no padding


def _butterfly_reference(x: np.ndarray, signs: np.ndarray) -> np.ndarray:
    """The rows of x (float32, blocks of n along the last axis) rotated by a plain float32 loop: w = x·(s/√n), then
    for h = 1, 2, 4, ...: (w[i], w[i + h]) <- (w[i] + w[i + h], w[i] - w[i + h]) for i in the low half of each pair."""
    n = signs.size
    scale = np.float32(1.0 / np.sqrt(n))
    out = np.empty_like(x)
    for r in range(x.shape[0]):
        for b0 in range(0, x.shape[1], n):
            w = [np.float32(x[r, b0 + j]) * np.float32(signs[j] * scale) for j in range(n)]
            h = 1
            while h < n:
                for base in range(0, n, 2 * h):
                    for i in range(base, base + h):
                        w[i], w[i + h] = np.float32(w[i] + w[i + h]), np.float32(w[i] - w[i + h])
                h *= 2
            out[r, b0:b0 + n] = w
    return out


@pytest.mark.parametrize("block,seed", [(16, None), (16, 7), (4, 1), (32, 2)])
def test_fwht_bits_match_a_float32_butterfly_in_every_layout(block, seed):
    """apply is the butterfly of the module docstring, bit for bit: against a plain float32 loop, eager and
    compiled, along the last axis, along axis 0 (the weight-gradient operands) and on a transposed view."""
    from lowp.formats import compiling

    rht = RandomHadamard(block, seed=seed)
    g = torch.Generator().manual_seed(block)
    x = torch.randn(6, 4 * block, generator=g) * torch.exp2(torch.randint(-30, 30, (6, 1), generator=g).float())
    x[1, 3], x[2, :block] = float("nan"), 2.0**-149
    want = torch.from_numpy(_butterfly_reference(x.numpy(), rht.sign_vector().numpy()))
    got = []
    with compiling.eager_only():
        got.append(rht.apply(x, -1))
    with compiling.compiled_at_any_size():
        got += [rht.apply(x, -1), rht.apply(x.t().contiguous(), 0).t(), rht.apply(x.t(), 0).t()]
    for y in got:
        assert bool(((y.view(torch.int32) == want.view(torch.int32)) | (y.isnan() & want.isnan())).all())
