"""torchao's CPU reference quantizers as a test-only oracle (skipped when torchao is not importable; install it
without dependencies: ``pip download --no-deps torchao`` then ``pip install --no-deps``, keeping this torch).

Compared, bit for bit, on finite data whose blocks are not tiny (|amax| >= 2^(emax_elem - 126)):
  * ``to_mx`` (every ScaleCalculationMode: floor, ceil, even, rceil) with E4M3, E5M2 and E2M1 elements,
    blocks of 32 and 16: E8M0 exponents and element codes = ``MXFormat(scale_rounding=...)``;
  * ``nvfp4_quantize`` with a per-tensor scale: E4M3 block scales and E2M1 codes = ``NVFP4Format("torchao")``;
  * float8 ``amax_to_scale`` (rowwise scales, with and without power-of-two rounding) = ``fp8-row`` scales.
Where the implementations differ (by design; not compared here): torchao propagates NaN (and, for MX, Inf) into
the block scale, so the whole block becomes NaN, where lowp passes such elements through; torchao's MX floor/ceil/
even paths divide by 2^-126 instead of 2^-127 when the E8M0 exponent is -127, and its rceil path multiplies by 1
there (lowp uses the stored 2^-127); torchao's nvfp4 gives NaN for an all-zero tensor (0/0), lowp zeros.
"""
import pytest
import torch

import lowp
from lowp.formats import MXFormat, NVFP4Format

mx_tensor = pytest.importorskip("torchao.prototype.mx_formats.mx_tensor")
from torchao.prototype.mx_formats.config import ScaleCalculationMode  # noqa: E402
from torchao.prototype.mx_formats.kernels import f4_unpacked_to_f32, unpack_uint4  # noqa: E402
from torchao.prototype.mx_formats.nvfp4_tensor import nvfp4_quantize, per_tensor_amax_to_scale  # noqa: E402
from torchao.float8.float8_utils import amax_to_scale  # noqa: E402


def data(rows, cols, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, cols, generator=g) * torch.exp2(torch.randint(-10, 10, (rows, 1), generator=g).float())
    x[0, 0] = 448.0  # exactly the E4M3 max
    x[1, 0] = 6.0 * 2.0**3  # exactly E2M1 max · 2^k
    x[2, 0] = 1.9999999  # all-ones mantissa (even rounds up)
    x[3, 0] = 496.0
    x[4, :] *= 2.0**100  # near the top of the range
    x[5, 0] = 1e30  # one huge value in its block
    return x


MODES = {"floor": ScaleCalculationMode.FLOOR, "ceil": ScaleCalculationMode.CEIL,
         "even": ScaleCalculationMode.EVEN, "rceil": ScaleCalculationMode.RCEIL}
ELEMS = {"e4m3": torch.float8_e4m3fn, "e5m2": torch.float8_e5m2, "e2m1": torch.float4_e2m1fn_x2}


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("elem", list(ELEMS))
@pytest.mark.parametrize("block", [16, 32])
def test_to_mx(mode, elem, block):
    x = data(24, 128, seed=block)
    scale, lp = mx_tensor.to_mx(x, ELEMS[elem], block, MODES[mode])
    if elem == "e2m1":
        codes = f4_unpacked_to_f32(unpack_uint4(lp)).reshape(x.shape)
    else:
        codes = lp.float()
    e_ao = scale.view(torch.uint8).to(torch.int64) - 127
    fmt = MXFormat(lowp.get_format(elem), block=block, scale_rounding=mode)
    g = x.reshape(24, 128 // block, block)
    e = fmt.shared_exponent(g)[..., 0]
    assert torch.equal(e, e_ao)
    ours = fmt.quantize(x)
    assert torch.equal(ours, (codes.reshape(g.shape) * torch.exp2(e.float()).unsqueeze(-1)).reshape(x.shape))


def test_nvfp4_quantize():
    x = data(32, 64, seed=3)
    x[6] *= 2.0**-30  # blocks far below the tensor amax: torchao's lower clamp of d_b at 2^-6 is active
    pts = per_tensor_amax_to_scale(x.abs().amax())
    scales, packed = nvfp4_quantize(x, 16, pts)
    codes = f4_unpacked_to_f32(unpack_uint4(packed)).reshape(x.shape)
    q, d_b, s_dec, _ = NVFP4Format("torchao").encode(x)
    assert float(s_dec) == float(pts)
    assert torch.equal(d_b.reshape(-1), scales.float().reshape(-1))
    assert torch.equal(q.reshape(x.shape), codes)


@pytest.mark.parametrize("pow2", [False, True])
def test_float8_rowwise_scale(pow2):
    x = data(40, 96, seed=4)
    x[7] = 0.0  # amax below torchao's 1e-12 floor
    amax = x.abs().amax(dim=1, keepdim=True)
    ours = lowp.get_format("fp8-row-pow2" if pow2 else "fp8-row").scales(x)
    assert torch.equal(ours.reshape(-1), amax_to_scale(amax, torch.float8_e4m3fn, pow2).reshape(-1))
