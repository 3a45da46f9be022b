"""The MX kernels with element constants baked in (lowp.formats.mx_compiled) give the eager reference's bits
(block.MXFormat, itself tested against exact references) on adversarial blocks, for nearest and stochastic rounding
(every random-bit width class), elements with and without subnormals and fnuz; directed roundings and other scale
roundings keep the general kernel; shapes do not recompile. (Each kernel compiles once per process: seconds.)"""
import pytest
import torch

import lowp
from lowp.formats import FloatFormat, MXFormat, compiling, dispatch, mx_compiled


def same_bits(a, b):
    return a.shape == b.shape and bool(
        ((a.view(torch.int32) == b.view(torch.int32)) | (torch.isnan(a) & torch.isnan(b))).all())


def adversarial(rows=64, cols=128, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, cols, generator=g) * torch.exp2(torch.randint(-60, 60, (rows, cols), generator=g).float())
    x[0, :32] = 0.0  # a zero block: E = -127
    x[1, 3], x[1, 40], x[1, 41] = float("nan"), float("inf"), -float("inf")
    x[2, :32] *= 2.0**-100  # float32 subnormals
    x[3, :32] = torch.randn(32, generator=g) * 2.0**-140  # a subnormal block amax
    x[4, :32] = torch.randn(32, generator=g) * 1e-30
    x[4, 0] = 2.0**100  # one huge value: the others fall below 2^-126 once scaled by 2^-E (the float32 underflow)
    x[5, :32] = 3.0e38 * torch.rand(32, generator=g)  # amax near FLT_MAX
    x[5, 0] = torch.finfo(torch.float32).max
    x[6, :32] = 448.0 * 1.0351562  # just above the largest e4m3 value times 2^0: rounds up past max, saturates
    x[7, :32] = -0.0
    x[8, 32:64] = torch.linspace(-1.0, 1.0, 32) * 2.0**-126  # the float32 normal/subnormal boundary
    return x


def eager(x, fmt, mode, **kw):
    """The eager reference's result."""
    with compiling.eager_only():
        return lowp.quantize(x, fmt, mode, **kw)


def check(monkeypatch, x, fmt, mode, **kw):
    a = eager(x, fmt, mode, generator=torch.Generator().manual_seed(3), **kw)
    before = dispatch.compiled_calls
    with compiling.compiled_at_any_size():
        b = lowp.quantize(x, fmt, mode, generator=torch.Generator().manual_seed(3), **kw)
    assert dispatch.compiled_calls == before + 1
    assert same_bits(a, b), (fmt, mode, kw)


NO_SUB_FNUZ = MXFormat(FloatFormat(4, 3, bias=8, special="fnuz", subnormals=False, name="e4m3fnuz-nosub"))


@pytest.mark.parametrize("passes", ["fused", "separate"])
@pytest.mark.parametrize("fmt", ["mxfp8_e4m3", "mxfp8_e5m2", "mxfp6_e3m2", "mxfp4_e2m1", NO_SUB_FNUZ],
                         ids=["e4m3", "e5m2", "e3m2", "e2m1", "nosub-fnuz"])
def test_adversarial_blocks_bit_identical(fmt, passes, monkeypatch):
    """Both forms of the kernels: one graph (``fused``, small tensors) and the three passes (large ones)."""
    monkeypatch.setattr(mx_compiled, "FUSED_MAX", 1 << 40 if passes == "fused" else 0)
    assert mx_compiled.supported(lowp.get_format(fmt) if isinstance(fmt, str) else fmt, "nearest")
    x = adversarial()
    check(monkeypatch, x, fmt, "nearest")
    for k in (32, 25, 24, 8, 1):
        check(monkeypatch, x, fmt, "stochastic", rand_bits=k)


@pytest.mark.parametrize("block", [4, 8, 16, 64, 128])
def test_fused_kernel_at_other_block_lengths(block, monkeypatch):
    """The fused kernel's block binades fold rows of 8k elements to 8 lanes first (k = 2, 8, 16 here), take rows of 8
    directly and fall back to a plain reduction for other lengths (4): the reference's bits for each."""
    monkeypatch.setattr(mx_compiled, "FUSED_MAX", 1 << 40)
    x = adversarial()
    for fmt in (f"mxfp8_e4m3-b{block}", f"mxfp4_e2m1-b{block}"):
        check(monkeypatch, x, fmt, "nearest")
        check(monkeypatch, x, fmt, "stochastic", rand_bits=8)
        check(monkeypatch, x.t().contiguous(), fmt, "nearest")  # the special rows now spread across blocks


def test_directed_and_other_scale_roundings_keep_the_general_kernel(monkeypatch):
    """"up" sees any nonzero remainder, which the float32 scaling can lose below 2^-126 (the block with one huge
    value): that mode and the non-floor scales keep the general kernel, with the eager bits."""
    assert not mx_compiled.supported(lowp.get_format("mxfp8_e4m3"), "up")
    assert not mx_compiled.supported(MXFormat(lowp.get_format("e4m3"), scale_rounding="rceil"), "nearest")
    assert not mx_compiled.supported(MXFormat(lowp.get_format("bf16")), "nearest")  # emin - man < -125
    x = adversarial(seed=1)
    check(monkeypatch, x, "mxfp8_e4m3", "up")
    check(monkeypatch, x, MXFormat(lowp.get_format("e4m3"), scale_rounding="rceil"), "nearest")


def test_no_recompiles_across_shapes_and_ranks(monkeypatch):
    shapes = [(32,), (4, 64), (48, 96), (3, 5, 64), (2, 2, 3, 32), (33, 32), (1, 32), (7, 160), (9, 320)]
    assert len(shapes) > torch._dynamo.config.recompile_limit
    with compiling.compiled_at_any_size():
        for mode in ("nearest", "stochastic"):
            for shape in [(32,), (8, 32)]:
                lowp.quantize(torch.randn(shape), "mxfp8_e4m3", mode)
        graphs = compiling.graphs_compiled()
        for i, shape in enumerate(shapes):
            x = torch.randn(shape, generator=torch.Generator().manual_seed(i)) * 3.0
            for mode in ("nearest", "stochastic"):
                y = lowp.quantize(x, "mxfp8_e4m3", mode, generator=torch.Generator().manual_seed(i))
                assert same_bits(y, eager(x, "mxfp8_e4m3", mode,
                                          generator=torch.Generator().manual_seed(i))), (shape, mode)
    assert compiling.graphs_compiled() == graphs


@pytest.mark.parametrize("fmt", ["mxfp8_e4m3", "mxfp8_e5m2", "mxfp4_e2m1", NO_SUB_FNUZ],
                         ids=["e4m3", "e5m2", "e2m1", "nosub-fnuz"])
@pytest.mark.parametrize("layout", ["2d", "3d"])
def test_adversarial_blocks_along_another_axis_rounded_in_place(fmt, layout, monkeypatch):
    """``quantize_along``: the adversarial blocks laid down a column (axis 0 of a matrix; the middle axis of a 3-D
    tensor), rounded where they lie: the eager reference's bits (which groups along the axis in float64), random
    bits included, and no transposed copy made."""
    import dataclasses

    base = lowp.get_format(fmt) if isinstance(fmt, str) else fmt
    x = adversarial().t().contiguous()  # (128, 64): column c holds row c's blocks
    x, axis = (x, 0) if layout == "2d" else (x.reshape(4, 32, 64), 1)
    fmt = dataclasses.replace(base, axis=axis)
    calls = []
    monkeypatch.setattr(mx_compiled, "quantize_along",
                        lambda *a, _f=mx_compiled.quantize_along, **k: calls.append(1) or _f(*a, **k))
    check(monkeypatch, x, fmt, "nearest")
    for k in (32, 24, 8, 1):
        check(monkeypatch, x, fmt, "stochastic", rand_bits=k)
    assert len(calls) == 5


@pytest.mark.parametrize("rounding", ["nearest", "stochastic"])
@pytest.mark.parametrize("shape,axis", [((96, 80), 0), ((70, 96), 0), ((4, 64, 40), 1)])
def test_blocks_along_another_axis_compiled_equal_the_eager_reference(shape, axis, rounding):
    """The compiled path rounds the blocks where they lie (``quantize_along``; a length that is not a multiple of
    the block: the axis moved last by a compiled transposition, padded, and back); the eager reference groups along
    the axis itself (group_view, float64): the same bits, random bits included."""
    import dataclasses

    fmt = dataclasses.replace(lowp.get_format("mxfp8_e4m3"), axis=axis)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(*shape, generator=g) * torch.logspace(-4, 4, shape[axis]).reshape(
        [-1 if i == axis else 1 for i in range(len(shape))])
    x.view(-1)[5] = float("nan")
    with compiling.compiled_at_any_size():
        torch.manual_seed(9)
        got = fmt.quantize(x, rounding)
    with compiling.eager_only():
        torch.manual_seed(9)
        want = fmt.quantize(x, rounding)
    assert got.is_contiguous()
    assert same_bits(got, want)


def _short_lines(shape, strided, seed=0):
    """Values over 80 binades with NaN, ±Inf, zeros and an all-zero line; ``strided``: a view, as attention's q
    is of the fused qkv projection (shape (b, h, t, d) taken from (b, t, 3, h, d))."""
    g = torch.Generator().manual_seed(seed)
    if strided:
        b, h, t, d = shape
        x = torch.randn(b, t, 3, h, d, generator=g).permute(2, 0, 3, 1, 4)[1]
    else:
        x = torch.randn(*shape, generator=g)
    x.mul_(torch.exp2(torch.randint(-40, 40, x.shape, generator=g).float()))
    x[torch.arange(x.numel()).reshape(x.shape) % 7 == 3] = float("nan")
    x[..., 1] = float("inf")
    x[..., 2] = -0.0
    x[(0,) * (x.dim() - 1)] = 0.0  # an all-zero line: E = -127
    return x


@pytest.mark.parametrize("fmt", ["mxfp8_e4m3", "mxfp4_e2m1", "mxfp8_e4m3-rceil", NO_SUB_FNUZ],
                         ids=["e4m3", "e2m1", "e4m3-rceil", "nosub-fnuz"])
@pytest.mark.parametrize("shape,axis,strided", [((8, 4, 64, 16), -1, True), ((8, 4, 16, 64), -2, False),
                                                ((300, 8), -1, False), ((6, 4), -1, False), ((8, 2, 5), 0, False)])
def test_lines_shorter_than_a_block_rounded_unpadded(fmt, shape, axis, strided, monkeypatch):
    """Lines shorter than the block (attention's head dim 16 under blocks of 32; any length dividing the block),
    rounded to nearest: each line is one block, rounded at its own length without the zero-padded copy; the eager
    reference pads. The same bits; stochastic rounding keeps the padded layout (its random bits sit there)."""
    import dataclasses

    base = lowp.get_format(fmt) if isinstance(fmt, str) else fmt
    f = dataclasses.replace(base, axis=axis)
    x = _short_lines(shape, strided)
    assert x.shape[axis] < f.block
    want = eager(x, f, "nearest")
    pads = []
    real_pad = torch.nn.functional.pad
    monkeypatch.setattr(torch.nn.functional, "pad", lambda *a, **k: pads.append(1) or real_pad(*a, **k))
    with compiling.compiled_at_any_size():
        got = f.quantize(x, "nearest")
    assert same_bits(got, want) and pads == []
    with compiling.compiled_at_any_size():
        torch.manual_seed(9)
        sr = f.quantize(x, "stochastic")
    assert pads == [1]
    with compiling.eager_only():
        torch.manual_seed(9)
        assert same_bits(sr, f.quantize(x, "stochastic"))
