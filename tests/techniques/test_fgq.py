"""FGQ ternary: exact per-group optimum against brute force over all ternary assignments; grouping; counts."""
import math

import pytest
import torch
from torch import nn

from lowp.techniques.fgq import FGQConfig, fgq, fgq_weight, reduction_view
from lowp.techniques.ptq import model_stats, quantized_layers
from lowp_refs import brute_ternary_error  # tests/formats (pytest pythonpath)

pytestmark = pytest.mark.usefixtures("one_thread")  # restored after each test


@pytest.mark.parametrize("n", [2, 3, 4, 5])
def test_fgq_optimum_matches_brute_force(n):
    gen = torch.Generator().manual_seed(n)
    w = torch.randn(6, 2 * n, generator=gen, dtype=torch.float64)  # two groups per row
    wq = fgq_weight(w, n)
    for row in range(w.shape[0]):
        for k in range(2):
            g = w[row, k * n:(k + 1) * n]
            q = wq[row, k * n:(k + 1) * n]
            err = float(((g - q) ** 2).sum())
            assert err == pytest.approx(brute_ternary_error(g.tolist()), rel=1e-12, abs=1e-12)
            # q = alpha * t with one alpha, t ternary
            nzv = q[q != 0].abs()
            assert torch.allclose(nzv, nzv[0].expand_as(nzv))
            # alpha is optimal for its t: alpha = g.t / |t|
            t = torch.sign(q)
            assert float(nzv[0]) == pytest.approx(float((g * t).sum() / t.abs().sum()), rel=1e-12)


def test_threshold_rule_and_not_better_than_optimum():
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(8, 16, generator=gen, dtype=torch.float64)
    thr = fgq_weight(w, 4, "threshold")
    opt = fgq_weight(w, 4, "optimal")
    g = w.reshape(-1, 4)
    keep = g.abs() > 0.7 * g.abs().mean(1, keepdim=True)
    assert torch.equal(thr.reshape(-1, 4) != 0, keep)
    assert ((w - opt) ** 2).sum() <= ((w - thr) ** 2).sum()


def test_conv_groups_run_along_input_channels():
    w = torch.randn(3, 8, 2, 2, dtype=torch.float64)
    flat, inv = reduction_view(w)
    assert torch.equal(inv(flat), w)
    assert torch.equal(flat[1, :8], w[1, :, 0, 0])  # first group of N=8 = all channels at kernel position (0,0)
    wq = fgq_weight(w, 8)
    for o in range(3):
        for i in range(2):
            for j in range(2):
                q = wq[o, :, i, j]
                assert float(((w[o, :, i, j] - q) ** 2).sum()) == pytest.approx(
                    brute_ternary_error(w[o, :, i, j].tolist()), abs=1e-12)


def test_smaller_groups_lower_error():
    w = torch.randn(32, 64, generator=torch.Generator().manual_seed(1))
    errs = [float(((w - fgq_weight(w, n)) ** 2).sum()) for n in (4, 8, 16, 32, 64)]
    assert errs == sorted(errs)


def test_fgq_model_multiplications_and_sizes():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 4))
    x = torch.randn(64, 16)
    q = fgq(m, [x], FGQConfig(group=4, act_bits=4, edge_bits=None))
    st = model_stats(q)
    macs = 16 * 32 + 32 * 64 + 64 * 4
    assert st["macs"] == macs
    assert st["mults"] == pytest.approx(16 * 32 / 4 + 32 * 64 / 4 + 64 * 4 / 4)
    assert st["mult_fraction_replaced"] == pytest.approx(0.75)
    layers = quantized_layers(q)
    assert all(layer.act_qparams.qmax == 7 for _, layer in layers)
    for _, layer in layers:
        w = layer.weight_q.reshape(-1, 4)
        nz = w.abs()
        # one magnitude per group
        assert torch.all((nz == nz.amax(1, keepdim=True)) | (nz == 0))
    assert layers[1][1].info["size_bytes"] == 32 * 64 * 2 // 8 + 4 * 32 * 64 // 4 + 4 * 64
    # edge layers at 8 bits: first/last keep all multiplications
    q8 = fgq(m, [x], FGQConfig(group=64))
    st8 = model_stats(q8)
    assert st8["mults"] == pytest.approx(16 * 32 + 32 * 64 / 32 + 64 * 4)
    with pytest.raises(ValueError, match="group"):
        FGQConfig(group=0)
    assert math.isfinite(float(q8(x).detach().sum()))
