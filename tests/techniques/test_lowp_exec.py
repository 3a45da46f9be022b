"""Real INT8/BF16 execution: torch._int_mm path against the fake-quant reference; packed save/load."""

import pytest
import torch
from torch import nn

from lowp.formats import IntFormat
from lowp.techniques.lowp_exec import (Int8Linear, dynamic_int8, fp32_size, int8_matmul, load_packed, save_packed,
                                       to_bf16, to_int8)
from lowp.techniques.ptq import PTQConfig, ptq_int8

pytestmark = pytest.mark.usefixtures("one_thread")  # restored after each test


@pytest.mark.parametrize("m,k,n", [(1, 13, 5), (17, 64, 32), (40, 30, 7)])
def test_int8_matmul_exact(m, k, n):
    g = torch.Generator().manual_seed(m)
    a = torch.randint(-127, 128, (m, k), generator=g, dtype=torch.int8)
    b = torch.randint(-127, 128, (k, n), generator=g, dtype=torch.int8)
    assert torch.equal(int8_matmul(a, b), a.long().mm(b.long()).int())


@pytest.mark.parametrize("m", [1, 5, 33])
def test_int_mm_linear_equals_fake_quant_reference(m):
    torch.manual_seed(m)
    lin = nn.Linear(45, 19)
    x = torch.randn(m, 45) * 3
    y = Int8Linear.from_linear(lin)(x)
    # reference: symmetric per-tensor input grid and per-channel weight grid, both IntFormat(8), FP32 GEMM in float64
    xq = IntFormat(8).quantize(x).double()
    wq = IntFormat(8, axis=1).quantize(lin.weight.detach()).double()
    ref = xq @ wq.T + lin.bias.detach().double()
    assert torch.allclose(y.double(), ref, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(y, lin(x), rtol=1e-6, atol=1e-6)  # it is quantized


def test_static_scale_from_ptq_matches_fake_quant_model():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 8))
    x = torch.randn(128, 32)
    q = ptq_int8(m, [x], PTQConfig())
    e = to_int8(q)
    assert all(isinstance(e[i], Int8Linear) and e[i].act_scale is not None for i in (0, 2))
    assert torch.allclose(e(x), q(x).detach(), rtol=1e-4, atol=1e-4)


def test_save_load_bit_identical_and_small(tmp_path):
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(256, 512), nn.ReLU(), nn.Linear(512, 256), nn.ReLU(), nn.Linear(256, 10))
    e = to_int8(m)
    p = str(tmp_path / "q.pt")
    size = save_packed(e, p)
    fp = fp32_size(m, str(tmp_path / "fp32.pt"))
    assert fp / size >= 3.0
    r = load_packed(p, m)
    for (n1, t1), (n2, t2) in zip(e.state_dict().items(), r.state_dict().items()):
        assert n1 == n2 and t1.dtype == t2.dtype and torch.equal(t1, t2)
    assert r[0].qweight.dtype == torch.int8
    x = torch.randn(20, 256)
    assert torch.equal(r(x), e(x))
    with pytest.raises(ValueError, match="not a lowp packed model"):
        torch.save({"a": 1}, str(tmp_path / "bad.pt"))
        load_packed(str(tmp_path / "bad.pt"), m)


def test_bf16_and_dynamic_close():
    """Really reduced precision (outputs differ from FP32) and close to FP32 within each format's error: BF16 (8
    significant bits) a relative error of a few 2^-9, dynamic INT8 (per-tensor activations) about 1%."""
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    x = torch.randn(32, 64)
    ref = m(x).detach()

    def rel(y):
        return ((y - ref).norm() / ref.norm()).item()

    b = to_bf16(m)
    assert b.inner[0].weight.dtype == torch.bfloat16
    yb = b(x)
    assert yb.dtype == torch.float32 and not torch.equal(yb, ref)
    assert rel(yb) < 2.0**-6
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yi = dynamic_int8(m)(x)
    assert not torch.equal(yi, ref) and rel(yi) < 0.03
