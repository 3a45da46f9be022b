"""Int8Linear on fbgemm's prepacked int8 GEMM against the torch._int_mm path: bit-identical outputs (same int8
codes, same int32 accumulators, same dequantisation and bias add), including the adversarial all-±127 product."""
import copy
import pickle

import pytest
import torch
from torch import nn

from lowp.techniques.lowp_exec import FBGEMM_MAX_ROWS, Int8Linear, fbgemm_exact, to_int8

pytestmark = [pytest.mark.usefixtures("one_thread"),
              pytest.mark.skipif(not fbgemm_exact(), reason="fbgemm int8 Linear not available/exact here")]


@pytest.mark.parametrize("m,k,n,static,bias", [(1, 45, 19, False, True), (1, 1024, 256, False, True),
                                               (5, 64, 32, True, True), (33, 130, 7, False, False),
                                               (256, 256, 96, True, False), (300, 40, 24, False, True)])
def test_fbgemm_kernel_bit_identical_to_int_mm(m, k, n, static, bias):
    torch.manual_seed(m + k)
    lin = nn.Linear(k, n, bias=bias)
    x = torch.randn(m, k) * 3
    act = float(x.abs().amax() / 127 * 0.7) if static else None  # static scale: some inputs clip at ±127
    a = Int8Linear.from_linear(lin, act, kernel="int_mm")
    b = Int8Linear.from_linear(lin, act, kernel="fbgemm")
    assert b.uses_fbgemm(x) and not a.uses_fbgemm(x)
    ya, yb = a(x), b(x)
    assert torch.equal(ya, yb)
    assert torch.equal(b(x.reshape(1, m, k)), yb.reshape(1, m, n))  # leading dims
    assert torch.equal(b(torch.zeros(2, k)), a(torch.zeros(2, k)))  # amax 0: scale 1


def test_fbgemm_kernel_exact_on_saturating_pattern():
    k, n = 256, 8
    lin = nn.Linear(k, n)
    with torch.no_grad():
        lin.weight.fill_(0.5)
        lin.weight[1::2] = -0.5
    x = torch.full((4, k), 2.0)
    x[1] = -2.0
    x[2, ::2] = -2.0
    a, b = Int8Linear.from_linear(lin, kernel="int_mm"), Int8Linear.from_linear(lin, kernel="fbgemm")
    assert torch.equal(a(x), b(x))
    # the integer product itself: codes all ±127, 127·127·k · (2/127) · (0.5/127) = k per output of row 0
    with torch.no_grad():
        assert float(b(x)[0, 0] - lin.bias[0]) == pytest.approx(2.0 * 0.5 * k, rel=1e-6)


def test_auto_kernel_copies_and_pickles():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 8))
    e = to_int8(m)
    x = torch.randn(3, 32)
    y = e(x)
    assert all(e[i].kernel == "auto" and e[i].uses_fbgemm(x) and e[i]._packed is not None for i in (0, 2))
    big = torch.randn(FBGEMM_MAX_ROWS + 1, 32)
    assert not e[0].uses_fbgemm(big) and torch.equal(e(big), to_int8(m, kernel="fbgemm")(big))
    c = copy.deepcopy(e)
    assert c[0]._packed is None and torch.equal(c(x), y)
    assert torch.equal(pickle.loads(pickle.dumps(e))(x), y)
    assert torch.equal(to_int8(m, kernel="int_mm")(x), y)
    with pytest.raises(ValueError, match="kernel must be one of"):
        to_int8(m, kernel="vnni")
