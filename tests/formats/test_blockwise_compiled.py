"""The compiled FP8 blockwise kernels (lowp.formats.blockwise_compiled) give the eager reference's bits
(blockwise.BlockScaledFormat, itself tested against exact references in test_hw_formats) on adversarial blocks: per
row, 1-D blocks along the last or another axis (partial last blocks included), square and non-square tiles (partial
tiles included), both scale orders (te, torchao), FP32 and power-of-two scales, elements with and without subnormals.
(Each kernel compiles once per process: seconds.)"""
import pytest
import torch

import lowp
from lowp.formats import BlockScaledFormat, FloatFormat, blockwise_compiled, compiling, dispatch


def same_bits(a, b):
    return a.shape == b.shape and bool(
        ((a.view(torch.int32) == b.view(torch.int32)) | (torch.isnan(a) & torch.isnan(b))).all())


def adversarial(rows, cols, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, cols, generator=g) * torch.exp2(torch.randint(-40, 40, (rows, cols), generator=g).float())
    x[0, :] = 0.0  # zero blocks (te: s = 1; torchao: the amax floor 1e-12)
    x[1, 3], x[1, 17], x[1, 18] = float("nan"), float("inf"), -float("inf")  # pass through, not in amax
    x[2, :] = torch.randn(cols, generator=g) * 2.0**-140  # a subnormal amax: te's s overflows to FLT_MAX
    x[3, :] = 3.0e38 * torch.rand(cols, generator=g)  # amax near FLT_MAX
    x[3, 0] = torch.finfo(torch.float32).max
    x[4, :] = -0.0
    x[5, :] = torch.randn(cols, generator=g) * 1e-30
    x[5, 1] = 2.0**90  # one huge value per block: the others flush
    x[6, :] = float("nan")  # a block of NaN only: amax 0
    return x


def check(x, fmt):
    with compiling.eager_only():
        a = lowp.quantize(x, fmt)
    before = dispatch.compiled_calls
    with compiling.compiled_at_any_size():
        b = lowp.quantize(x, fmt)
    assert dispatch.compiled_calls == before + 1  # the compiled kernel ran
    assert same_bits(a, b), fmt


E4M3 = lowp.get_format("e4m3")
CONFIGS = {"te-pow2": dict(style="te", pow2=True), "torchao": dict(style="torchao", pow2=False)}


@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("block", [None, 128, 16, (16, 16), (4, 8)], ids=["row", "1x128", "1x16", "16x16", "4x8"])
def test_adversarial_bit_identical(block, config):
    x = adversarial(40, 200)  # 200 = 128 + 72: a partial block; 40 rows: partial 16x16 tiles
    check(x, BlockScaledFormat(E4M3, block=block, **CONFIGS[config]))
    if isinstance(block, tuple):  # one tile spans the rows (8 < 16) or the columns
        check(adversarial(8, 200), BlockScaledFormat(E4M3, block=block, **CONFIGS[config]))
        check(adversarial(8, 200).t().contiguous(), BlockScaledFormat(E4M3, block=block, **CONFIGS[config]))
    else:  # blocks along another axis, a 3-D tensor (rows of 37, inner 24)
        check(x.t().contiguous(), BlockScaledFormat(E4M3, block=block, axis=0, **CONFIGS[config]))
        check(adversarial(4 * 37, 24).view(4, 37, 24), BlockScaledFormat(E4M3, block=block, axis=1,
                                                                         **CONFIGS[config]))


@pytest.mark.parametrize("config", ["te", "torchao-pow2"])
def test_other_scale_orders_and_whole_blocks(config):
    kw = dict(style=config.split("-")[0], pow2=config.endswith("pow2"))
    x = adversarial(64, 256)  # whole blocks and tiles: no padding
    for block in (None, 128, (32, 32)):
        check(x, BlockScaledFormat(E4M3, block=block, **kw))


@pytest.mark.parametrize("element", [lowp.get_format("e5m2"),
                                     FloatFormat(4, 3, bias=8, special="fnuz", subnormals=False,
                                                 name="e4m3fnuz-nosub")], ids=["e5m2", "nosub-fnuz"])
def test_other_elements(element):
    assert blockwise_compiled.supported(BlockScaledFormat(element, block=16), "nearest")
    check(adversarial(32, 80), BlockScaledFormat(element, block=16))


def test_other_roundings_keep_the_eager_path():
    fmt = BlockScaledFormat(E4M3, block=16)
    x = adversarial(8, 32)
    for mode in ("zero", "stochastic"):
        assert not blockwise_compiled.supported(fmt, mode) and not blockwise_compiled.usable(x, fmt, mode)
    with compiling.eager_only():
        a = lowp.quantize(x, fmt, "zero")
    with compiling.compiled_at_any_size():
        assert same_bits(a, lowp.quantize(x, fmt, "zero"))


def test_rounds_in_place():
    """Contiguous float32 to nearest; tiles only square (a square tile of Wᵀ is the transpose of one of W's, so the
    emulated ops round a transposed W as W itself), checked here."""
    w = adversarial(48, 80)
    sq, rect = BlockScaledFormat(E4M3, block=(16, 16)), BlockScaledFormat(E4M3, block=(16, 8))
    assert sq.rounds_in_place(w, -1, "nearest") and not rect.rounds_in_place(w, -1, "nearest")
    assert not sq.rounds_in_place(w.t(), -1, "nearest") and not sq.rounds_in_place(w, -1, "stochastic")
    assert BlockScaledFormat(E4M3, block=128).rounds_in_place(w, 0, "nearest")
    with compiling.compiled_at_any_size():
        assert same_bits(sq.quantize(w.t().contiguous()), sq.quantize(w).t())
