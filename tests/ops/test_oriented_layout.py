"""The emulated ops round a block-format operand along its GEMM's reduction axis on a layout of their own
(ops/context.py, formats/layout.py): MX, NVFP4 1x16 and FP8 1x128 blocks where they lie
(``mx_compiled.quantize_along``, ``nvfp4_compiled.fused_along``, ``blockwise_compiled``; Wᵀ on W), square tiles of
a transposed tensor on the contiguous tensor itself. Oracle: ``lowp.quantize`` with
the format's ``axis`` set, on the tensor as given — the same bits, random bits included, with compilation on."""
import dataclasses

import pytest
import torch

import lowp
from lowp.formats import blockwise_compiled, compiling, mx_compiled, nvfp4_compiled
from lowp.ops import OpContext


def oriented(name, axis):
    return dataclasses.replace(lowp.get_format(name), axis=axis)


def spiky(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=g) * torch.logspace(-3, 3, shape[-2])[:, None]
    x.view(-1)[11] = float("nan")
    return x


@pytest.mark.parametrize("name,rounding", [("mxfp8_e4m3", "nearest"), ("mxfp4_e2m1", "stochastic"),
                                           ("nvfp4", "stochastic"), ("fp8-1x128", "nearest")])
@pytest.mark.parametrize("shape,axis", [((256, 96), 0), ((4, 64, 96), -2), ((96, 256), -1)])
def test_1d_blocks_along_any_axis_equal_the_format_quantizer(name, rounding, shape, axis, monkeypatch):
    x = spiky(*shape)
    src = x.t() if axis == -1 else x  # a transposed view along its last axis (Wᵀ of a linear layer)
    ctx = OpContext(lowp.Recipe(name="r", input=lowp.TensorSpec(name, rounding=rounding)))
    along = []
    monkeypatch.setattr(mx_compiled, "quantize_along",
                        lambda *a, _f=mx_compiled.quantize_along, **k: along.append(a[2]) or _f(*a, **k))
    monkeypatch.setattr(nvfp4_compiled, "_quantize_along",
                        lambda *a, _f=nvfp4_compiled._quantize_along, **k: along.append(a[1].axis) or _f(*a, **k))
    monkeypatch.setattr(blockwise_compiled, "quantize",
                        lambda *a, _f=blockwise_compiled.quantize, **k: along.append(a[1].axis) or _f(*a, **k))
    with compiling.compiled_at_any_size():
        torch.manual_seed(5)
        got = ctx.quantize("input", src, axis, axis)
        got_along = list(along)
        torch.manual_seed(5)
        want = lowp.quantize(src, oriented(name, axis), rounding)
    assert got.shape == src.shape
    assert torch.equal(got.contiguous().view(torch.int32), want.contiguous().view(torch.int32))
    assert got_along == [-2 if axis == -1 else axis]  # rounded where the blocks lie (Wᵀ: on W), no copy in or out


@pytest.mark.parametrize("rows,cols", [(128, 96), (40, 72)])
def test_square_tiles_of_a_transposed_weight_equal_the_format_quantizer(rows, cols):
    w = spiky(rows, cols, seed=1)
    wt = w.t()  # not contiguous; its transpose is
    ctx = OpContext(lowp.Recipe(name="r", weight="nvfp4-16x16"))
    with compiling.compiled_at_any_size():
        got = ctx.quantize("weight", wt, -2, -2)
        want = lowp.quantize(wt.contiguous(), oriented("nvfp4-16x16", -2))
    assert got.shape == wt.shape
    assert torch.equal(got.contiguous().view(torch.int32), want.view(torch.int32))
