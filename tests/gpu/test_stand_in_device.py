"""Device-agnostic code, checked without a GPU: lowp on a stand-in accelerator (``tagged.py``).

Every op of the run is checked with the CUDA dispatcher's device rule (a tensor created on the CPU and mixed with a
device tensor raises, as on CUDA), and the results are compared bit for bit with the same call on the CPU. Why
this and not the alternatives: the ``meta`` device carries no values (``Format.quantize`` returns early on it, and
data-dependent code such as amax-based scales cannot run), ``FakeTensorMode`` raises on every ``.item()`` / data-
dependent branch, and a scan of the source for factory calls without ``device=`` cannot tell a CPU constant that
is legitimately CPU (a 0-d scalar, a seed) from a bug. What the stand-in cannot check (CUDA kernels, torch.compile'd
graphs, ``torch._scaled_mm``) is in tests/gpu/test_cuda_bitexact.py, which runs where a GPU is present.
"""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import lowp
from lowp.formats.registry import FORMATS
from lowp.rounding import ROUNDING_MODES

from recipes.models import AllOps
from .tagged import DeviceMismatch, tagged, to_cpu, to_device

MX_VARIANTS = ["mxfp8_e4m3-rceil", "mxfp8_e5m2-ceil", "mxfp4_e2m1-even", "mxfp6_e2m3-b16", "mxint8-b16"]


_INT = {torch.float64: torch.int64, torch.float32: torch.int32, torch.bfloat16: torch.int16, torch.float16: torch.int16}


def _bits(t: torch.Tensor) -> torch.Tensor:
    """The bit patterns (NaN equals NaN, -0 differs from +0)."""
    return t.view(_INT[t.dtype]) if t.dtype in _INT else t


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and torch.equal(_bits(a), _bits(b))


def _adversarial(shape=(32, 256), seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g) * 2.0 ** torch.randint(-20, 12, shape, generator=g).float()
    x[0, :6] = torch.tensor([float("nan"), float("inf"), -float("inf"), 0.0, -0.0, 2.0**-140])
    x[1] = 0.0  # an all-zero block
    return x


def test_stand_in_catches_a_cpu_tensor():
    """The check can fail: a tensor made on the CPU and mixed with a device tensor raises, a CPU 0-d scalar is
    allowed (CUDA allows it), and a CPU generator for a device tensor raises."""
    with tagged():
        x = to_device(torch.ones(4))
        assert (x * torch.tensor(2.0)).device == x.device
        with pytest.raises(DeviceMismatch):
            _ = x + torch.ones(4)
        with pytest.raises(DeviceMismatch):
            torch.rand(4, device=x.device, generator=torch.Generator())


@pytest.mark.parametrize("name", list(FORMATS) + MX_VARIANTS)
def test_every_format_and_rounding_matches_cpu(name):
    fmt = lowp.get_format(name)
    x = _adversarial()
    modes = ["nearest"] if name.startswith("ternary") else ROUNDING_MODES
    for rounding in modes:
        for dtype in (torch.float32, torch.bfloat16):
            xi = x.to(dtype)
            ref = fmt.quantize(xi, rounding, generator=torch.Generator().manual_seed(3))
            with tagged():
                y = fmt.quantize(to_device(xi), rounding, generator=torch.Generator().manual_seed(3))
                out = to_device(torch.empty_like(xi))
                fmt.quantize(to_device(xi), rounding, generator=torch.Generator().manual_seed(3), out=out)
            assert y.device.type == "lazy"
            assert _same(to_cpu(y), ref), (name, rounding, dtype)
            assert _same(to_cpu(out), ref), (name, rounding, dtype, "out=")


@pytest.mark.parametrize("acc", [None, "fp16", "bf16", "tc14", "tc14-p128", "tc13-p32-g4-rn"])
def test_matmul_accumulators_match_cpu(acc):
    g = torch.Generator().manual_seed(0)
    a = torch.randn(3, 8, 300, generator=g).to(torch.float8_e4m3fn).float()
    b = torch.randn(300, 5, generator=g).to(torch.float8_e4m3fn).float()
    ref = lowp.matmul(a, b, accumulate=acc, chunk=64 if acc in ("fp16", "bf16") else None)
    with tagged():
        y = lowp.matmul(to_device(a), to_device(b), accumulate=acc, chunk=64 if acc in ("fp16", "bf16") else None)
    assert _same(to_cpu(y), ref)


def _train_step(model, idx, grad_seed=5):
    torch.manual_seed(grad_seed)
    out = model(idx)
    out.float().square().sum().backward()
    return out, {n: p.grad for n, p in model.named_parameters()}


@pytest.mark.parametrize("recipe", ["fp8-hybrid", "fixed16-sr", "int16-dfp", "mxfp8", "nvfp4", "fp8-rowwise",
                                    "fp8-blockwise", "fp8-delayed", "h100-fp8", "cpu-bf16"])
def test_emulated_model_forward_backward_matches_cpu(recipe):
    """Embedding, Conv1d, attention Matmuls, Conv2d and Linear under a recipe: output and every gradient."""
    torch.manual_seed(0)
    base = AllOps()
    idx = torch.randint(0, 20, (16, 8))
    o1, g1 = _train_step(lowp.emulate(copy.deepcopy(base), recipe), idx)
    with tagged():
        model = lowp.emulate(copy.deepcopy(base).to(torch.device("lazy")), recipe)
        o2, g2 = _train_step(model, to_device(idx))
    assert o2.device.type == "lazy"
    assert _same(to_cpu(o2), o1)
    for n in g1:
        assert _same(to_cpu(g2[n]), g1[n]), n


class _Attn(nn.Module):
    """Captured ops: F.linear on a Parameter, F.scaled_dot_product_attention, einsum."""

    def __init__(self, d=16):
        super().__init__()
        self.w = nn.Parameter(torch.randn(3 * d, d) / 4)
        self.o = nn.Parameter(torch.randn(d, d) / 4)

    def forward(self, x):
        q, k, v = F.linear(x, self.w).chunk(3, -1)
        h = F.scaled_dot_product_attention(q.unsqueeze(1), k.unsqueeze(1), v.unsqueeze(1), is_causal=True)
        return torch.einsum("btd,ed->bte", h.squeeze(1), self.o)


@pytest.mark.parametrize("recipe", ["fp8-hybrid", "mxfp8"])
def test_captured_attention_matches_cpu(recipe):
    torch.manual_seed(0)
    base, x = _Attn(), torch.randn(16, 8, 16)
    o1, g1 = _train_step(lowp.emulate(copy.deepcopy(base), recipe), x)
    with tagged():
        o2, g2 = _train_step(lowp.emulate(copy.deepcopy(base).to(torch.device("lazy")), recipe), to_device(x))
    assert _same(to_cpu(o2), o1)
    for n in g1:
        assert _same(to_cpu(g2[n]), g1[n]), n


def test_optimizer_rounding_and_rht_match_cpu():
    """LowpOptimizer's master-weight rounding (fixed16-sr: stochastic) and the random Hadamard transform."""
    torch.manual_seed(0)
    lin, x = nn.Linear(32, 8), torch.randn(4, 32)
    recipe = lowp.get_recipe("fixed16-sr")

    def step(model, x):
        torch.manual_seed(7)
        opt = lowp.LowpOptimizer(torch.optim.SGD(model.parameters(), lr=0.1), recipe)
        opt.backward(model(x).square().sum())
        opt.step()
        return model.weight.detach()

    ref = step(lowp.emulate(copy.deepcopy(lin), recipe), x)
    rht = lowp.RandomHadamard(16, seed=3)
    ref_h = rht.apply(x)
    with tagged():
        w = step(lowp.emulate(copy.deepcopy(lin).to(torch.device("lazy")), recipe), to_device(x))
        h = rht.apply(to_device(x))
    assert _same(to_cpu(w), ref)
    assert _same(to_cpu(h), ref_h)


def test_int8_linear_moves_to_the_device():
    """``Int8Linear.to(device)`` moves its padded int8 weight copies (plain attributes) with its buffers."""
    from lowp.techniques.lowp_exec import Int8Linear

    torch.manual_seed(0)
    q, x = Int8Linear.from_linear(nn.Linear(20, 12)), torch.randn(18, 20)
    ref = q(x)
    with tagged():
        y = copy.deepcopy(q).to(torch.device("lazy"))(to_device(x))
    assert _same(to_cpu(y), ref)
