"""The compiled fast paths (lowp.formats.dispatch): bit-identical to the eager references, really taken, no
recompiles across formats/shapes/ranks, and LOWP_COMPILE=0 turns them off. (Compilation costs seconds: the
tensors are just above FAST_MIN_NUMEL and each kernel is compiled once per process.)"""
import math

import pytest
import torch

import lowp
from lowp.formats import compiling, dispatch


def same_bits(a, b):
    return bool(((a.view(torch.int32) == b.view(torch.int32)) | (torch.isnan(a) & torch.isnan(b))).all())


def data(n=compiling.FAST_MIN_NUMEL, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, generator=g) * torch.exp2(torch.randint(-40, 40, (n,), generator=g).float())
    x[3], x[40], x[41] = float("nan"), float("inf"), -float("inf")
    x[64:96] = 0.0  # a zero MX block
    x[96:128] *= 2.0**-100  # float32 subnormals inside a block
    return x


def eager(monkeypatch, x, name, mode, **kw):
    monkeypatch.setenv("LOWP_COMPILE", "0")
    try:
        return lowp.quantize(x, name, mode, **kw)
    finally:
        monkeypatch.setenv("LOWP_COMPILE", "1")


@pytest.mark.parametrize("name", ["mxfp4_e2m1", "int8", "fp16-169"])
def test_fast_paths_bit_identical_and_taken(name, monkeypatch):
    x = data()
    for mode, kw in [("nearest", {}), ("up", {}), ("stochastic", {"rand_bits": 8}), ("stochastic", {"rand_bits": 1}),
                     ("stochastic", {})]:
        a = eager(monkeypatch, x, name, mode, generator=torch.Generator().manual_seed(1), **kw)
        before = dispatch.compiled_calls
        b = lowp.quantize(x, name, mode, generator=torch.Generator().manual_seed(1), **kw)
        assert dispatch.compiled_calls == before + 1, (name, mode)
        assert same_bits(a, b), (name, mode)
        out = torch.empty_like(x)
        assert lowp.quantize(x, name, mode, generator=torch.Generator().manual_seed(1), out=out, **kw) is out
        assert same_bits(out, a)


def test_small_or_other_tensors_stay_eager(monkeypatch):
    before = dispatch.compiled_calls
    lowp.quantize(torch.randn(100), "e4m3")
    lowp.quantize(data().double(), "e4m3")
    lowp.quantize(data()[: compiling.FAST_MIN_NUMEL - 4096].reshape(-1, 48), "mxfp8_e4m3")  # below FAST_MIN_NUMEL
    monkeypatch.setenv("LOWP_COMPILE", "0")
    lowp.quantize(data(), "e4m3")
    lowp.quantize(data(), "int8")
    assert dispatch.compiled_calls == before


def test_no_recompiles_across_formats_shapes_ranks(monkeypatch):
    x = data(1 << 17, seed=3)
    names = ("bf16", "e3m2", "tf32", "mxfp6_e3m2")
    # warm: the general kernels have one graph per (kernel, mode), with the format as tensor parameters (e4m3 warms
    # them for bf16/e3m2/tf32 "down"); round-to-nearest takes each format's own short path (one graph per format)
    for mode in ("nearest", "down"):
        lowp.quantize(x, "e4m3", mode)
        lowp.quantize(x, "mxfp8_e4m3", mode)
    for name in names:
        lowp.quantize(x, name, "nearest")
    graphs = compiling.graphs_compiled()
    calls = dispatch.compiled_calls
    shapes = [(1 << 17,), (256, 512), (2, 3, 96, 128)]
    for i, shape in enumerate(shapes):
        xs = data(int(torch.tensor(shape).prod()), seed=i).reshape(shape)
        for name in names:
            for mode in ("nearest", "down"):
                y = lowp.quantize(xs, name, mode)
                assert y.shape == xs.shape
                assert same_bits(y, eager(monkeypatch, xs, name, mode)), (shape, name, mode)
    assert dispatch.compiled_calls == calls + len(shapes) * 4 * 2
    assert compiling.graphs_compiled() == graphs  # not one recompilation across shapes and ranks


def test_requires_grad_inputs_do_not_recompile():
    """Inputs that require grad (activations inside autograd Functions) share the compiled graph: alternating them
    with plain tensors, sizes and formats many more times than dynamo's recompile limit must not fail."""
    import torch._dynamo

    from lowp.formats import dispatch

    before = dispatch.compiled_calls
    base = torch.randn(1 << 16, requires_grad=True)
    for i in range(2 * torch._dynamo.config.recompile_limit + 2):
        x = base * 1.5 if i % 2 else torch.randn((1 << 16) + i)
        y = lowp.quantize(x, "e5m2" if i % 3 else "e4m3")
        assert torch.equal(y, lowp.get_format("e5m2" if i % 3 else "e4m3").quantize(x.detach().double()).float())
    assert dispatch.compiled_calls == before + 2 * torch._dynamo.config.recompile_limit + 2


@pytest.mark.parametrize("axis,shape", [(0, (64, 128, 32)), (1, (64, 128, 32)), (-1, (1000, 100)), (0, (100, 999))])
def test_mx_blocks_along_any_axis_take_the_compiled_path_with_the_same_bits(axis, shape, monkeypatch):
    """MX blocks along a non-last axis (the orientation of wgrad/dgrad operands) or along a length that is not a
    multiple of the block run the compiled kernel on a transposed, zero-padded copy; nearest, directed and
    stochastic rounding give the eager bits (same element positions, so the same random bits)."""
    x = data(math.prod(shape), seed=7).reshape(shape)
    fmt = lowp.MXFormat(lowp.get_format("e4m3"), axis=axis)
    for mode, kw in [("nearest", {}), ("down", {}), ("stochastic", {"rand_bits": 8})]:
        a = eager(monkeypatch, x, fmt, mode, generator=torch.Generator().manual_seed(2), **kw)
        before = dispatch.compiled_calls
        b = lowp.quantize(x, fmt, mode, generator=torch.Generator().manual_seed(2), **kw)
        assert dispatch.compiled_calls == before + 1, mode
        assert b.is_contiguous() and same_bits(a, b), mode
