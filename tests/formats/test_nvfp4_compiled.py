"""The compiled NVFP4 path (lowp.formats.nvfp4_compiled) gives the eager reference's bits (nvfp4.py, itself tested
against exact Fractions in test_hw_formats.py) on adversarial inputs, both orders, 1x16 blocks and 16x16 tiles, every
rounding; it is really taken (also below FAST_MIN_NUMEL when forced), falls back to eager under a user dispatch mode
or LOWP_COMPILE=0, and shapes/ranks do not recompile. (Each kernel compiles once per process: seconds.)"""
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import lowp
from lowp.formats import NVFP4Format, compiling, dispatch, nvfp4_compiled

NAMES = ["nvfp4", "nvfp4-torchao", "nvfp4-16x16", "nvfp4-torchao-16x16"]


@pytest.fixture(autouse=True, params=["fused", "separate"])
def passes(request, monkeypatch):
    """Every test runs both forms of the 16x16-tile kernels: one graph (``fused``, small tensors) and the three
    passes."""
    monkeypatch.setattr(nvfp4_compiled, "FUSED_MAX", 1 << 40 if request.param == "fused" else 0)
    return request.param
ROUNDINGS = [("nearest", {}), ("stochastic", {}), ("stochastic", {"rand_bits": 3}), ("down", {})]


def same_bits(a, b):
    return a.shape == b.shape and a.dtype == b.dtype and bool(
        ((a.float().view(torch.int32) == b.float().view(torch.int32)) | (torch.isnan(a) & torch.isnan(b))).all())


def adversarial(rows=48, cols=80, seed=0):
    """Blocks of 16 along the last dim (and 16x16 tiles) that hit every case of the scale arithmetic."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, cols, generator=g) * torch.exp2(torch.randint(-12, 12, (rows, cols), generator=g).float())
    x[0, :16] = 0.0  # an all-zero block
    x[1, :16] = torch.randn(16, generator=g) * 1e-3
    x[1, 5] = 1e4  # one huge value in a block
    x[2, 16:32] = torch.randn(16, generator=g) * 2.0**-140  # float32-subnormal block amax
    x[3, :16] = 3.0e4 * torch.rand(16, generator=g)  # the tensor amax: other blocks' E4M3 scales go small
    x[4, 16:32] = 3.0e4 * 2.0**-17 * torch.rand(16, generator=g)  # block scale near E4M3's subnormal range
    x[4, 32:48] = 3.0e4 * 2.0**-19  # block scale below E4M3's smallest subnormal (TE: d_b = 0)
    x[5, 0], x[5, 17], x[6, 33] = float("nan"), float("inf"), -float("inf")
    x[6, 34] = float("nan")
    x[7, :16] = -0.0
    x[8, 3] = 2.0**-149  # the smallest subnormal
    return x


def eager(x, fmt, mode, **kw):
    """The eager reference's result."""
    with compiling.eager_only():
        return lowp.quantize(x, fmt, mode, **kw)


def check(monkeypatch, x, fmt, mode="nearest", out=None, **kw):
    """Compiled (forced at any size) against eager, for one (x, format, rounding); the compiled path is taken."""
    a = eager(x, fmt, mode, generator=torch.Generator().manual_seed(5), **kw)
    before = dispatch.compiled_calls
    with compiling.compiled_at_any_size():
        b = lowp.quantize(x, fmt, mode, generator=torch.Generator().manual_seed(5), out=out, **kw)
    assert dispatch.compiled_calls == before + 1, (fmt, mode)
    assert same_bits(a, b), (fmt, mode, kw, x.shape)
    if out is not None:
        assert b is out
    return b


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("mode,kw", ROUNDINGS, ids=["nearest", "sr32", "sr3", "down"])
def test_adversarial_blocks_bit_identical(name, mode, kw, monkeypatch):
    check(monkeypatch, adversarial(), name, mode, **kw)


@pytest.mark.parametrize("rand_bits", [1, 8, 22, 23, 24, 25, 31])
def test_stochastic_every_random_bit_width(rand_bits, monkeypatch):
    """The random-bit widths around E2M1's 22 dropped bits (normal range) and float32's 24-bit significand."""
    x = adversarial(seed=rand_bits)
    for name in NAMES[:2]:
        check(monkeypatch, x, name, "stochastic", rand_bits=rand_bits)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("shape", [(5, 7), (3, 40), (37, 50), (70,), (), (2, 3, 17, 33), (2, 32, 48)])
def test_short_rows_padding_and_ranks(name, shape, monkeypatch):
    """Rows shorter than a block, lengths that are not a multiple of 16 (zero padding), vectors, a scalar, rank 4;
    (2, 32, 48): 16x16 tiles read in place with the leading dim folded into the rows."""
    g = torch.Generator().manual_seed(len(shape) + sum(shape))
    x = torch.randn(shape, generator=g) * 7.0
    if x.numel() > 3:
        x.view(-1)[2] = float("nan")
    for mode, kw in ROUNDINGS[:2]:
        check(monkeypatch, x, name, mode, **kw)


@pytest.mark.parametrize("order", ["te", "torchao"])
@pytest.mark.parametrize("scale", [1.0, 2.0**-100, 2.0**-135, 2.0**-149, 2.0**100, 2.0**127, 0.0])
def test_tensor_scale_limits(order, scale, monkeypatch):
    """Whole tensors near the float32 range limits and all zeros: the per-tensor scale saturates or underflows
    (torchao's s_dec = 0 case included)."""
    x = (torch.randn(6, 48, generator=torch.Generator().manual_seed(2)) * scale).float()
    x[1, :16] = 0.0
    for block in (16, (16, 16)):
        for mode, kw in ROUNDINGS[:2]:
            check(monkeypatch, x, NVFP4Format(order, block), mode, **kw)


def test_amax_exhaustive_over_e4m3_scale_range(monkeypatch):
    """Every block amax 2^(e/4) (e sweeping 2^-40..2^16, the tensor amax fixed by one block at 3e4): the E4M3 block
    scale runs through 0, its subnormals, its normals and ties between its values, for both orders."""
    e = torch.arange(-160, 64, dtype=torch.float32) / 4.0
    rows = torch.exp2(e)[:, None] * torch.linspace(-1.0, 1.0, 16)[None, :]
    rows = torch.cat([torch.full((1, 16), 3.0e4), rows, rows * 1.0000001])
    for name in NAMES[:2]:
        for mode, kw in ROUNDINGS[:2]:
            check(monkeypatch, rows, name, mode, **kw)


@pytest.mark.parametrize("axis", [0, 1])
def test_other_axis_and_noncontiguous(axis, monkeypatch):
    x = adversarial(64, 48, seed=3)
    check(monkeypatch, x, NVFP4Format("te", 16, axis=axis), "stochastic", rand_bits=8)
    check(monkeypatch, x.t(), NVFP4Format("torchao", 16, axis=axis), "nearest")
    check(monkeypatch, x.t(), NVFP4Format("te", (16, 16)), "nearest")


@pytest.mark.parametrize("order", ["te", "torchao"])
@pytest.mark.parametrize("layout", ["2d", "3d"])
def test_adversarial_blocks_along_another_axis_rounded_in_place(order, layout, monkeypatch):
    """1x16 blocks down the columns of a contiguous tensor (axis 0; a 3-D middle axis) are rounded where they lie
    (``fused_along``: no transposed copy in or out): the eager reference's bits, random bits included; a directed
    rounding keeps the general path."""
    x = adversarial(48, 80).t().contiguous()  # (80, 48): column c holds row c's blocks
    x, axis = (x, 0) if layout == "2d" else (x.reshape(5, 16, 48), 1)
    calls = []
    monkeypatch.setattr(nvfp4_compiled, "_quantize_along",
                        lambda *a, _f=nvfp4_compiled._quantize_along, **k: calls.append(1) or _f(*a, **k))
    fmt = NVFP4Format(order, 16, axis=axis)
    for mode, kw in ROUNDINGS:
        check(monkeypatch, x, fmt, mode, **kw)
    assert len(calls) == 3  # nearest and the two stochastic ones
    out = torch.empty_like(x)
    assert check(monkeypatch, x, fmt, "stochastic", out=out) is out and len(calls) == 4


def test_out_and_half_inputs(monkeypatch):
    x = adversarial(32, 64, seed=4)
    check(monkeypatch, x, "nvfp4", out=torch.empty_like(x))
    check(monkeypatch, x, "nvfp4-16x16", out=torch.empty_like(x))
    check(monkeypatch, x, "nvfp4", out=torch.empty_like(x.t()).t())  # a non-contiguous out
    for dt in (torch.bfloat16, torch.float16):
        check(monkeypatch, x.to(dt), "nvfp4", "stochastic")


def test_large_tensor_takes_the_compiled_path_without_forcing(monkeypatch):
    x = adversarial(compiling.FAST_MIN_NUMEL // 256, 256, seed=6)
    a = eager(x, "nvfp4", "nearest")
    before = dispatch.compiled_calls
    assert same_bits(lowp.quantize(x, "nvfp4"), a)
    assert dispatch.compiled_calls == before + 1


def test_falls_back_to_eager_under_a_dispatch_mode_or_lowp_compile_0(monkeypatch):
    class Passthrough(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            return func(*args, **(kwargs or {}))

    x = adversarial(seed=8)
    ref = eager(x, "nvfp4", "nearest")
    before = dispatch.compiled_calls
    with compiling.compiled_at_any_size():
        with Passthrough():
            y = lowp.quantize(x, "nvfp4")
        monkeypatch.setenv("LOWP_COMPILE", "0")
        z = lowp.quantize(x, "nvfp4")
    assert dispatch.compiled_calls == before
    assert same_bits(y, ref) and same_bits(z, ref)
    assert not nvfp4_compiled.usable(x, force="eager")


def test_no_recompiles_across_shapes_and_ranks(monkeypatch):
    """Shapes and ranks (one-row and padded tensors included) share the graphs: ``compiling`` traces one graph per
    kernel, rounding and pattern of equal sizes (square or not, one tile row, ...), so a pass over more shapes than
    dynamo's recompile limit makes far fewer graphs than calls, and a second pass over the same shapes with other
    data and keys makes none; every result has the eager bits."""
    shapes = [(16,), (4, 32), (48, 80), (3, 5, 64), (2, 2, 3, 16), (33, 48), (1, 16), (7, 160), (32, 32), (64, 16)]
    assert len(shapes) * 2 > torch._dynamo.config.recompile_limit
    made = []
    with compiling.compiled_at_any_size():
        for n_pass in range(2):
            graphs, calls = compiling.graphs_compiled(), dispatch.compiled_calls
            for i, shape in enumerate(shapes):
                seed = 100 * n_pass + i
                x = torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * 3.0
                for name in NAMES:
                    for mode in ("nearest", "stochastic"):
                        y = lowp.quantize(x, name, mode, generator=torch.Generator().manual_seed(seed))
                        assert same_bits(y, eager(x, name, mode,
                                                  generator=torch.Generator().manual_seed(seed))), (shape, name, mode)
            assert dispatch.compiled_calls == calls + len(shapes) * len(NAMES) * 2
            made.append(compiling.graphs_compiled() - graphs)
    assert made[1] == 0, made
    assert made[0] <= len(shapes) * len(NAMES) * 2 // 2, made  # graphs are shared across shapes

