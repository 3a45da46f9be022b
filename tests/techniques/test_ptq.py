"""PTQ INT8: calibration on known distributions, affine grids against a slow reference, BN folding, digits model."""
import math

import pytest
import torch
from torch import nn

from lowp.techniques.calibration import QParams, calibrate_range, fake_quant, qparams
from lowp.techniques.ptq import PTQConfig, fold_batchnorm, model_stats, ptq_int8, quantize_weight_int, quantized_layers

pytestmark = pytest.mark.usefixtures("one_thread")  # restored after each test


def test_minmax_exact():
    x = torch.tensor([-3.0, 0.5, 2.0])
    assert calibrate_range(x, "minmax", symmetric=False) == (-3.0, 2.0)
    assert calibrate_range(x, "minmax") == (-3.0, 3.0)


def test_percentile_uniform():
    x = torch.linspace(0, 1, 100001)
    lo, hi = calibrate_range(x, "percentile", symmetric=False, percentile=99.0)
    assert abs(hi - 0.99) < 1e-6 and abs(lo - 0.01) < 1e-6
    lo, hi = calibrate_range(x - 0.5, "percentile", percentile=90.0)
    assert abs(hi - 0.45) < 1e-4 and lo == -hi


def test_entropy_known_distributions():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200000, generator=g)
    _, t = calibrate_range(x, "entropy")
    assert 3.0 < t < 5.5  # clips the Gaussian tail, well inside max|x| (~4.5-5)
    _, tr = calibrate_range(x.relu(), "entropy")
    assert abs(tr - t) < 0.3  # ReLU zeros do not pull the threshold down
    # rare outliers: clipped away (min-max would waste the grid on them)
    _, to = calibrate_range(torch.cat([x, torch.full((20,), 50.0)]), "entropy")
    assert to < 10
    assert calibrate_range(torch.cat([x, torch.full((20,), 50.0)]), "minmax")[1] == 50.0
    # uniform data: nothing to clip
    u = torch.rand(200000, generator=g) * 2 - 1
    _, tu = calibrate_range(u, "entropy")
    assert tu > 0.95


def test_qparams_and_fake_quant_reference():
    qp = qparams(-1.0, 3.0, 8, symmetric=False)
    assert qp.qmin == 0 and qp.qmax == 255 and qp.zero_point == round(1.0 / qp.scale)
    x = torch.linspace(-2, 4, 1001)
    y = fake_quant(x, qp)
    # slow reference: nearest (ties to even) on the affine grid, saturating
    for xi, yi in zip(x.tolist(), y.tolist()):
        q = min(max(round(xi / qp.scale) + qp.zero_point, 0), 255)  # Python round: ties to even
        assert yi == pytest.approx(float(torch.tensor((q - qp.zero_point) * qp.scale, dtype=torch.float32)), abs=0)
    assert float(fake_quant(torch.tensor([0.0]), qp)) == 0.0  # zero exact
    qs = qparams(-2.0, 1.0, 8)
    assert qs.symmetric and qs.scale == 2.0 / 127
    assert QParams.from_dict(qs.to_dict()) == qs


def test_weight_int_per_channel():
    w = torch.tensor([[1.0, -0.5, 0.25], [100.0, 3.0, -50.0]])
    wq, s = quantize_weight_int(w, 8, "channel")
    assert torch.allclose(s[:, 0], torch.tensor([1 / 127, 100 / 127]))
    assert torch.all((wq - w).abs() <= s / 2 + 1e-7)
    wt, st = quantize_weight_int(w, 8, "tensor")
    assert float(st) == pytest.approx(100 / 127) and wt[0, 2] == 0  # 0.25 < half a step
    wa, _ = quantize_weight_int(w, 4, "channel", symmetric=False)
    assert torch.all((wa - w).abs() <= (w.amax(1, keepdim=True) - w.amin(1, keepdim=True)) / 15 / 2 + 1e-6)


def test_fold_batchnorm_equivalent():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv1d(2, 4, 3), nn.BatchNorm1d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6, 5),
                      nn.BatchNorm1d(5))
    m.train()
    for _ in range(3):
        m(torch.randn(16, 2, 8) * 3 + 1)
    m.eval()
    for bn in (m[1], m[5]):
        bn.weight.data.uniform_(0.5, 2)
        bn.bias.data.uniform_(-1, 1)
    x = torch.randn(7, 2, 8)
    ref = m(x)
    pairs = fold_batchnorm(m)
    assert pairs == [("0", "1"), ("4", "5")]
    assert isinstance(m[1], nn.Identity) and isinstance(m[5], nn.Identity)
    assert torch.allclose(m(x), ref, atol=1e-5)


def _digits_model():
    from sklearn.datasets import load_digits
    d = load_digits()
    x = torch.tensor(d.data, dtype=torch.float32) / 16
    y = torch.tensor(d.target)
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    opt = torch.optim.Adam(m.parameters(), 1e-2)
    for _ in range(150):
        opt.zero_grad()
        nn.functional.cross_entropy(m(x[:1400]), y[:1400]).backward()
        opt.step()
    return m.eval(), x, y


@pytest.mark.parametrize("cal", ["minmax", "percentile", "entropy"])
def test_int8_ptq_digits_within_one_point(cal):
    m, x, y = _digits_model()
    acc = lambda mod: 100 * float((mod(x[1400:]).argmax(1) == y[1400:]).float().mean())  # noqa: E731
    q = ptq_int8(m, [x[:256]], PTQConfig(calibration=cal))
    assert acc(m) > 90
    assert abs(acc(q) - acc(m)) <= 1.0
    # and it really quantized: outputs differ, weights lie on the per-channel grid
    assert not torch.equal(q(x[:50]), m(x[:50]))
    for _, layer in quantized_layers(q):
        k = layer.weight_q / layer.weight_scale
        assert torch.allclose(k, k.round(), atol=1e-3) and float(k.abs().max()) <= 127.001
    st = model_stats(q)
    assert st["weight_bits"] == 8 and st["size_bytes"] < st["fp32_bytes"] / 3


def test_skip_first_last_and_errors():
    m, x, _ = _digits_model()
    q = ptq_int8(m, [x[:64]], PTQConfig(skip_first=True, skip_last=True))
    for _, layer in quantized_layers(q):
        assert layer.info["method"] == "fp32" and layer.act_qparams is None
    assert torch.allclose(q(x[:10]), m(x[:10]), atol=1e-6)
    with pytest.raises(ValueError, match="calibration method 'kl'"):
        PTQConfig(calibration="kl")
    with pytest.raises(ValueError, match="weight_bits"):
        PTQConfig(weight_bits=1)
    assert PTQConfig.from_dict(PTQConfig(act_bits=4).to_dict()) == PTQConfig(act_bits=4)
    with pytest.raises(ValueError, match="empty"):
        ptq_int8(m, [])
    assert math.isfinite(float(q(x[:1]).detach().sum()))
