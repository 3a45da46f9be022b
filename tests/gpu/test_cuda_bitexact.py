"""The bit-exactness suites on a CUDA GPU, against the CPU reference (skipped, with the reason, without a GPU).

What is compared, and how exactly:

- ``quantize``: every registered format (and MX scale-rounding/block variants) × every rounding mode, float32 at a
  size below ``FAST_MIN_NUMEL`` (the eager kernels) and above it (the torch.compile'd CUDA kernels), bf16/fp16/
  float64 inputs, ``out=``: the CUDA result equals the CPU result **bit for bit**. Stochastic rounding included:
  its random bits are a hash of the element index under a key drawn from the generator, and the key is drawn on
  the generator's device, so the same CPU generator seed gives the same bits on either device (device-agnostic).
  A CUDA generator is accepted too: it draws another key, and every element is then RD(x) or RU(x).
- ``lowp.matmul`` with an emulated accumulator (FP16/BF16 chunked, tensor-core models): the float64 reference
  runs on the GPU (lowp/ops/accumulate.py keeps its compiled FP32 path to the CPU), so **bit for bit**.
- Emulated Linear / Conv2d / captured SDPA, forward and backward, same weights, input and output gradient on both
  devices, TF32 off: the quantized operands are the same bits, and a plain FP32 GEMM differs only by summation
  order, so outputs and gradients agree within the GEMM bound |Δ| <= 2·K·2^-24·(|A|·|B|) (Higham, Accuracy and
  Stability, §3.1, doubled for the two devices; taken x4 at K = 1024 and the largest |A|·|B|); with an emulated
  accumulator (fp8-ibm, h100-fp8) the GEMM is exact arithmetic and its result is **bit-identical** (the forward
  output; dgrad and wgrad too where the backward uses the same accumulator). Captured SDPA: softmax is computed
  by each device's own kernel, so a probability on a rounding boundary may round the other way: at least 95 % of
  outputs agree within the GEMM bound and all within one E4M3 ulp of the largest value (1/8 relative).
- ``Int8Linear`` (``torch._int_mm``: int8 × int8 → int32, exact): bit for bit.
"""
from __future__ import annotations

import copy
import os

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import lowp
from lowp.formats import compiling, dispatch
from lowp.formats.registry import FORMATS
from lowp.rounding import ROUNDING_MODES

from .conftest import SKIP_REASON

# LOWP_GPU_TEST_DEVICE=cpu runs the suite's own logic against the CPU (trivially exact): a check of the test code
DEV = torch.device(os.environ.get("LOWP_GPU_TEST_DEVICE", "cuda"))
pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(DEV.type == "cuda" and not torch.cuda.is_available(), reason=SKIP_REASON)]
MX_VARIANTS = ["mxfp8_e4m3-rceil", "mxfp8_e4m3-ceil", "mxfp8_e5m2-even", "mxfp4_e2m1-b16", "mxfp6_e3m2-rceil",
               "mxint8-b16"]
SIZES = (32 * 256, 512 * 256)  # below and above compiling.FAST_MIN_NUMEL (rows of 256: MX blocks along the last axis)
_INT = {torch.float64: torch.int64, torch.float32: torch.int32, torch.bfloat16: torch.int16, torch.float16: torch.int16}


def _eager():
    """CPU references by the eager kernels (no CPU compilation on the GPU machine; the compiled CPU kernels are
    checked against them in tests/formats)."""
    return compiling.eager_only()


@pytest.fixture(autouse=True)
def _no_tf32():
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    a, b = a.cpu(), b.cpu()
    return a.shape == b.shape and a.dtype == b.dtype and torch.equal(a.view(_INT[a.dtype]), b.view(_INT[b.dtype]))


def _adversarial(numel: int, seed: int = 0) -> torch.Tensor:
    """Rows of 256: half Gaussian, half small integers (exact ties for every format of <= 11 significand bits),
    times 2^e over a wide range (subnormals of every target, overflow), with NaN/±Inf/±0, a zero row, a row of
    float32 subnormals."""
    g = torch.Generator().manual_seed(seed)
    shape = (numel // 256, 256)
    e = 2.0 ** torch.randint(-40, 20, shape, generator=g).float()
    gauss = torch.randn(shape, generator=g)
    ints = torch.randint(-(2**11), 2**11, shape, generator=g).float()
    x = torch.where(torch.rand(shape, generator=g) < 0.5, gauss, ints) * e
    x[0, :5] = torch.tensor([float("nan"), float("inf"), -float("inf"), 0.0, -0.0])
    x[1] = 0.0
    x[2] = torch.randn(256, generator=g) * 2.0**-130
    return x


@pytest.mark.parametrize("name", list(FORMATS) + MX_VARIANTS)
def test_quantize_matches_cpu_bit_for_bit(name):
    fmt = lowp.get_format(name)
    modes = ["nearest"] if name.startswith("ternary") else ROUNDING_MODES
    calls0 = dispatch.compiled_calls
    for numel in SIZES:
        x = _adversarial(numel)
        xd = x.to(DEV)
        for rounding in modes:
            for saturate in (False, True):
                kw = dict(saturate=saturate)
                with _eager():
                    ref = fmt.quantize(x, rounding, generator=torch.Generator().manual_seed(3), **kw)
                y = fmt.quantize(xd, rounding, generator=torch.Generator().manual_seed(3), **kw)
                assert y.device.type == DEV.type
                assert _same(y, ref), (name, numel, rounding, saturate)
                out = torch.empty_like(xd)
                fmt.quantize(xd, rounding, generator=torch.Generator().manual_seed(3), out=out, **kw)
                assert _same(out, ref), (name, numel, rounding, saturate, "out=")
    if name in ("bf16", "e4m3", "mxfp8_e4m3", "int8"):  # these take the compiled CUDA kernels at the large size
        assert dispatch.compiled_calls > calls0 or not compiling.compile_enabled()


@pytest.mark.parametrize("name", ["bf16", "fp16", "e4m3", "e5m2", "e2m1", "mxfp8_e4m3", "mxfp4_e2m1", "nvfp4",
                                  "fp8-1x128", "fp8-128x128", "int8", "dfp16"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float64])
def test_quantize_other_dtypes_match_cpu(name, dtype):
    x = _adversarial(SIZES[0]).clamp(-6e4, 6e4).to(dtype)
    for rounding in ("nearest", "zero", "stochastic"):
        with _eager():
            ref = lowp.quantize(x, name, rounding, generator=torch.Generator().manual_seed(1))
        y = lowp.quantize(x.to(DEV), name, rounding, generator=torch.Generator().manual_seed(1))
        assert _same(y, ref), (name, dtype, rounding)


@pytest.mark.parametrize("name", ["bf16", "e4m3", "e5m2", "mxfp8_e4m3", "int8"])
def test_cuda_generator_rounds_down_or_up(name):
    x = _adversarial(SIZES[1]).to(DEV)
    y = lowp.quantize(x, name, "stochastic", saturate=True, generator=torch.Generator(device=DEV).manual_seed(0))
    lo, hi = lowp.quantize(x, name, "down", saturate=True), lowp.quantize(x, name, "up", saturate=True)
    ok = (y == lo) | (y == hi) | (torch.isnan(y) & torch.isnan(lo))
    assert y.device.type == DEV.type and bool(ok.all())


@pytest.mark.parametrize("acc,chunk", [("fp16", 64), ("bf16", None), ("fp16-169", 64), ("tc14", None),
                                       ("tc14-p128", None), ("tc13-p32-g4-rn", None)])
def test_matmul_accumulators_match_cpu(acc, chunk):
    g = torch.Generator().manual_seed(0)
    a = torch.randn(2, 16, 1024, generator=g).to(torch.float8_e4m3fn).float()
    b = torch.randn(1024, 24, generator=g).to(torch.float8_e4m3fn).float()
    with _eager():
        ref = lowp.matmul(a, b, accumulate=acc, chunk=chunk)
    assert _same(lowp.matmul(a.to(DEV), b.to(DEV), accumulate=acc, chunk=chunk), ref)


class _Attn(nn.Module):
    def __init__(self, d=32):
        super().__init__()
        self.w = nn.Parameter(torch.randn(3 * d, d) / d**0.5)

    def forward(self, x):
        q, k, v = F.linear(x, self.w).chunk(3, -1)
        return F.scaled_dot_product_attention(q.unsqueeze(1), k.unsqueeze(1), v.unsqueeze(1), is_causal=True)


def _layer(kind: str) -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    if kind == "linear":
        return nn.Linear(256, 64), torch.randn(32, 256)
    if kind == "conv":
        return nn.Conv2d(8, 16, 3, padding=1), torch.randn(4, 8, 12, 12)
    return _Attn(), torch.randn(32, 16, 32)


def _fwd_bwd(model, x, gout):
    torch.manual_seed(2)  # stochastic gradient rounding (nvfp4) draws its keys from the global CPU generator
    x = x.clone().requires_grad_(True)
    y = model(x)
    y.backward(gout)
    return [y.detach(), x.grad] + [p.grad for p in model.parameters()]


K_BOUND = 1024  # >= every reduction length of the layers above (forward, dgrad and wgrad GEMMs)


def _gemm_bounds(base, x, gout, kind) -> list[float]:
    """Per compared tensor: 2·K·2^-24·max(|A|·|B|) x4 (quantized operands may be up to twice the unquantized ones),
    with |A|·|B| from the same layer run in float64 on |x|, |W|, |b| and |grad| (all products positive: its
    outputs and gradients are exactly the sums of |products|). SDPA (not bilinear): from the CPU result's max."""
    if kind == "sdpa":
        return []
    m = copy.deepcopy(base).double()
    with torch.no_grad():
        for p in m.parameters():
            p.abs_()
    sums = _fwd_bwd(m, x.double().abs(), gout.double().abs())
    return [8 * K_BOUND * 2.0**-24 * float(t.abs().max()) for t in sums]


@pytest.mark.parametrize("kind", ["linear", "conv", "sdpa"])
@pytest.mark.parametrize("recipe", ["fp32", "bf16", "fp8-hybrid", "mxfp8", "mxfp4", "nvfp4", "fp8-rowwise",
                                    "fp8-blockwise", "fp8-ibm", "h100-fp8"])
def test_emulated_layers_forward_backward_match_cpu(kind, recipe):
    base, x = _layer(kind)
    torch.manual_seed(1)
    gout = torch.randn_like(base(x))
    with _eager():
        ref = _fwd_bwd(lowp.emulate(copy.deepcopy(base), recipe), x, gout)
    got = _fwd_bwd(lowp.emulate(copy.deepcopy(base).to(DEV), recipe), x.to(DEV), gout.to(DEV))
    rec = lowp.get_recipe(recipe)
    # emulated accumulation is exact arithmetic on either device: the output, and dgrad/wgrad when the backward
    # GEMMs use the same accumulator (the bias gradient is a plain torch sum: bounded, not exact)
    exact = ({0} if rec.accumulate is not None else set()) | (
        {1, 2} if rec.accumulate is not None and rec.accumulate_backward is None else set())
    bounds = _gemm_bounds(base, x, gout, kind)
    for i, (r, g) in enumerate(zip(ref, got)):
        g = g.cpu()
        if i in exact and kind != "sdpa":
            assert _same(g, r), (recipe, kind, i)
            continue
        d = (g - r).abs()
        if kind == "sdpa":
            tol = 8 * K_BOUND * 2.0**-24 * float(r.abs().max())
            assert float((d <= tol).double().mean()) >= 0.95, (recipe, i, float(d.max()), tol)
            assert float(d.max()) <= r.abs().max() / 8 + tol, (recipe, i, float(d.max()))
        else:
            assert float(d.max()) <= bounds[i], (recipe, kind, i, float(d.max()), bounds[i])


def test_int8_linear_matches_cpu():
    from lowp.techniques.lowp_exec import Int8Linear

    torch.manual_seed(0)
    lin, x = nn.Linear(96, 40), torch.randn(33, 96)
    q = Int8Linear.from_linear(lin)
    ref = q(x)
    assert _same(q.to(DEV)(x.to(DEV)), ref)
