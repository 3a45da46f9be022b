"""Accelerator formats (docs/accelerator-recipes.md) against the exact references of ``hw_refs.py``, bit for bit, on adversarial
inputs: MX E8M0 scale roundings, FP8 row/1x128/128x128 scaling (torchao and TE orders), NVFP4 (TE and torchao
orders, 1x16 and 16x16), stochastic rounding of the FP4 elements."""
import math
from fractions import Fraction

import numpy as np
import pytest
import torch

import lowp
from lowp.formats import BlockScaledFormat, MXFormat, NVFP4Format
from lowp.formats.tiles import tile_view

from hw_refs import E2M1, block_amax, fp8_block_reference, grid_rn, mx_reference, nvfp4_block_reference

F32_MAX = float(torch.finfo(torch.float32).max)


def assert_same(got: torch.Tensor, exp, what=""):
    exp = torch.as_tensor(np.asarray(exp, dtype=np.float64)).reshape(got.shape)
    g = got.double()
    ok = (g == exp) | (torch.isnan(g) & torch.isnan(exp))
    bad = ~ok
    assert bool(ok.all()), (f"{what}: {int(bad.sum())} mismatches, e.g. {g[bad][:4].tolist()} vs "
                            f"{exp[bad][:4].tolist()}")


def adversarial(rows: int, cols: int, block: int, seed: int) -> torch.Tensor:
    """Rows of random data with one hard case per row (each row holds whole blocks plus a partial one)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, cols, generator=g) * torch.exp2(torch.randint(-4, 4, (rows, cols), generator=g).float())
    cases = [
        lambda r: r.zero_(),                                            # all-zero blocks
        lambda r: r.__setitem__(5, 1e30),                               # one huge value per block
        lambda r: r.__setitem__(slice(None), r * 2.0**-130),             # subnormal amax
        lambda r: r.__setitem__(slice(None), r * 2.0**120),              # amax near 2^127 (E8M0 / fp32 top)
        lambda r: (r.__setitem__(1, float("nan")), r.__setitem__(block + 2, float("inf")),
                   r.__setitem__(2 * block - 1, -float("inf"))),         # NaN / ±Inf inside blocks
        lambda r: r.__setitem__(0, 448.0 * 2.0**-3),                     # amax exactly max_elem · 2^k
        lambda r: r.__setitem__(0, float(np.nextafter(np.float32(448 * 2.0**-3), np.float32(1e9)))),
        lambda r: r.__setitem__(0, 1.9999999),                           # mantissa all ones: rounds up
        lambda r: r.__setitem__(0, 2.0**-140),                           # lone subnormal (rest tiny)
        lambda r: r.__setitem__(slice(None), r * 2.0**-149 * 0 + 2.0**-149 * torch.sign(r)),  # all at 2^-149
        lambda r: r.__setitem__(0, 6.0 * 2.0**5),
        lambda r: r.__setitem__(0, -F32_MAX),
    ]
    for i in range(rows):
        cases[i % len(cases)](x[i])
    if rows > 8:
        x[8] *= 2.0**-20  # tiny next to large rows of the tensor
    return x


def tiles_2d(rows: int, cols: int, t: int, seed: int) -> torch.Tensor:
    """Random data whose t×t tiles hold the hard cases: zeros, one huge value, subnormal amax, NaN/±Inf."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, cols, generator=g)
    x[:t, :t] = 0.0
    x[5, t + 3] = 1e30
    x[t:, :t] *= 2.0**-135
    x[t + 1, t + 1], x[t + 2, t + 5], x[rows - 1, cols - 1] = float("nan"), float("inf"), -float("inf")
    return x


def blocks_of(x: torch.Tensor, axis, block):
    g, inv = tile_view(x, axis, block)
    return g.reshape(-1, g.shape[-1]), g.shape, inv


# ---- MX scale rounding ---------------------------------------------------------------------------------------------

MX_ELEMS = ["e4m3", "e5m2", "e2m1", "e3m2"]


@pytest.mark.parametrize("mode", ["floor", "ceil", "rceil", "even"])
@pytest.mark.parametrize("name", MX_ELEMS + ["int8"])
@pytest.mark.parametrize("block", [16, 32, 128])
def test_mx_scale_rounding(mode, name, block):
    fmt = MXFormat("int8" if name == "int8" else lowp.get_format(name), block=block, scale_rounding=mode)
    x = adversarial(13, 2 * block + block // 2, block, seed=block + len(name))
    got = fmt.quantize(x)
    flat, shape, inv = blocks_of(x, -1, block)
    exp_vals = torch.tensor([mx_reference(b.tolist(), name, mode) for b in flat], dtype=torch.float64)
    assert_same(got, inv(exp_vals.reshape(shape)).numpy(), f"{fmt.name}")


def test_mx_default_is_floor_and_names():
    assert lowp.get_format("mxfp8_e4m3").scale_rounding == "floor"
    assert lowp.get_format("mxfp8_e4m3").name == "mxfp8_e4m3"
    f = lowp.get_format("mxfp8_e4m3-b16-rceil")
    assert (f.block, f.scale_rounding, f.element.name) == (16, "rceil", "e4m3")
    assert lowp.get_format("mxfp4_e2m1-even").block == 32
    with pytest.raises(ValueError, match="scale_rounding"):
        MXFormat(lowp.get_format("e4m3"), scale_rounding="nearest")


def test_mx_roundings_differ_where_the_definitions_do():
    """amax = 1.75·2^8 = 448 (E4M3 max): floor/rceil keep X = 1, ceil takes X = 2; amax = 1.9375·2^8 rounds up
    under `even` (to 2^9) and exceeds 448 under floor (saturates) while rceil takes X = 2."""
    e = lambda mode, a: int(MXFormat(lowp.get_format("e4m3"), scale_rounding=mode).shared_exponent(
        torch.tensor([[[a] + [0.0] * 31]]))[0, 0, 0])
    assert [e(m, 448.0) for m in ("floor", "ceil", "rceil", "even")] == [0, 1, 0, 0]
    assert [e(m, 496.0) for m in ("floor", "ceil", "rceil", "even")] == [0, 1, 1, 1]
    assert [e(m, 256.0) for m in ("floor", "ceil", "rceil", "even")] == [0, 0, 0, 0]


def test_mx_rceil_fast_path_matches_eager(monkeypatch):
    """The compiled MX path (float32, >= 2^16 elements) takes the exponents of a non-floor rounding from the
    eager code and rounds the elements in the compiled kernel: same bits as the eager path."""
    fmt = lowp.get_format("mxfp8_e4m3-rceil")
    x = adversarial(64, 1024, 32, seed=5).reshape(-1)[: 1 << 16].reshape(64, 1024)
    got = fmt.quantize(x)
    monkeypatch.setenv("LOWP_COMPILE", "0")
    assert_same(got, fmt.quantize(x).numpy(), "fast vs eager")


# ---- FP8 row / block / tile scaling ----------------------------------------------------------------------------------

@pytest.mark.parametrize("name,style,pow2,block", [
    ("fp8-row", "torchao", False, None), ("fp8-row-pow2", "torchao", True, None),
    ("fp8-1x128", "te", False, 128), ("fp8-1x128-pow2", "te", True, 128),
    ("fp8-128x128", "te", False, (128, 128)), ("fp8-128x128-pow2", "te", True, (128, 128)),
])
def test_fp8_scaled_formats(name, style, pow2, block):
    fmt = lowp.get_format(name)
    assert (fmt.style, fmt.pow2, fmt.block) == (style, pow2, block)
    if isinstance(block, tuple):
        x = tiles_2d(150, 200, 128, seed=7)  # partial 128×128 tiles in both dims
    else:
        x = adversarial(13, 300, 128, seed=3)
    got = fmt.quantize(x)
    flat, shape, inv = blocks_of(x, -1, block)
    exp = torch.tensor([fp8_block_reference(b.tolist(), style, pow2) for b in flat], dtype=torch.float64)
    assert_same(got, inv(exp.reshape(shape)).numpy(), name)


def test_fp8_row_axis_follows_the_reduction_dim():
    """Rows and columns of very different ranges: per-row scales (axis=-1) keep small rows accurate, per-column
    scales (axis=0) keep small columns accurate; each equals the reference along its own axis."""
    x = torch.outer(torch.exp2(torch.arange(-6, 6).float()), torch.exp2(torch.arange(0, 20).float() - 10))
    x = x * (1 + torch.rand(x.shape, generator=torch.Generator().manual_seed(0)))
    rows = BlockScaledFormat(lowp.get_format("e4m3"), None, axis=-1, style="torchao").quantize(x)
    cols = BlockScaledFormat(lowp.get_format("e4m3"), None, axis=0, style="torchao").quantize(x)
    for r in range(x.shape[0]):
        assert_same(rows[r], fp8_block_reference(x[r].tolist(), "torchao", False), "row")
    for c in range(x.shape[1]):
        assert_same(cols[:, c], fp8_block_reference(x[:, c].tolist(), "torchao", False), "col")
    assert not torch.equal(rows, cols)


# ---- NVFP4 ---------------------------------------------------------------------------------------------------------

def nvfp4_expected(x: torch.Tensor, order: str, block):
    big_a = block_amax(x.reshape(-1).tolist())
    flat, shape, inv = blocks_of(x, -1, block)
    vals = [nvfp4_block_reference(b.tolist(), big_a, order)[0] for b in flat]
    return inv(torch.tensor(vals, dtype=torch.float64).reshape(shape))


@pytest.mark.parametrize("order", ["te", "torchao"])
@pytest.mark.parametrize("block", [16, (16, 16)], ids=["1x16", "16x16"])
def test_nvfp4_against_exact_reference(order, block):
    x = adversarial(40, 72, 16, seed=11)
    x[0, 0] = 3.0e4  # tensor amax far above most blocks: small blocks' E4M3 scales go subnormal or to 0 (TE)
    fmt = NVFP4Format(order, block)
    assert_same(fmt.quantize(x), nvfp4_expected(x, order, block).numpy(), fmt.name)


@pytest.mark.parametrize("order", ["te", "torchao"])
@pytest.mark.parametrize("scale", [1.0, 2.0**-100, 2.0**-135, 2.0**100, 0.0])
def test_nvfp4_tensor_scale_limits(order, scale):
    """Whole tensors near the float32 range limits (and all zeros): the per-tensor scale saturates or underflows."""
    g = torch.Generator().manual_seed(2)
    x = (torch.randn(6, 48, generator=g) * scale).float()
    x[1, :16] = 0.0
    fmt = NVFP4Format(order)
    assert_same(fmt.quantize(x), nvfp4_expected(x, order, 16).numpy(), f"{order} scale {scale}")


def test_nvfp4_orders_differ_on_tiny_blocks():
    """TE has no lower clamp on the E4M3 block scale (a block 2^-19 below the tensor amax gets d_b = 0 and is
    flushed), torchao clamps d_b at 2^-6 and keeps it: the documented difference."""
    x = torch.zeros(1, 32)
    x[0, 0] = 1.0
    x[0, 16:] = 2.0**-19
    te = lowp.get_format("nvfp4").quantize(x)
    ta = lowp.get_format("nvfp4-torchao").quantize(x)
    assert float(te[0, 16]) == 0.0 and float(ta[0, 16]) > 0.0
    assert_same(te, nvfp4_expected(x, "te", 16).numpy(), "te")
    assert_same(ta, nvfp4_expected(x, "torchao", 16).numpy(), "torchao")


def test_nvfp4_codes_and_scales_match_reference():
    x = adversarial(8, 64, 16, seed=4)
    fmt = NVFP4Format("te")
    q, d_b, s_dec, inv = fmt.encode(x)
    big_a = block_amax(x.reshape(-1).tolist())
    flat, _, _ = blocks_of(x, -1, 16)
    for i, b in enumerate(flat):
        _, codes, db = nvfp4_block_reference(b.tolist(), big_a, "te")
        assert float(d_b.reshape(-1)[i]) == float(db)
        got = q.reshape(-1, 16)[i]
        for j, c in enumerate(codes):
            if c is not None:
                assert float(got[j]) == float(c)


def test_nvfp4_2d_tiles_are_transpose_symmetric():
    """One amax per 16×16 tile: quantizing Wᵀ gives the transpose of quantizing W (the wgrad copy of a weight
    uses the same tiles)."""
    w = torch.randn(48, 80, generator=torch.Generator().manual_seed(1))
    f = lowp.get_format("nvfp4-16x16")
    assert torch.equal(f.quantize(w.t().contiguous()), f.quantize(w).t())


def test_nvfp4_stochastic_rounding_unbiased_and_seeded():
    """SR on the E2M1 codes: E[q] = clamp(x·e_b) (the scaled value) per position, within 5 standard errors
    (rows: 20000 copies of one block; the gap between neighbours is at most 2, so SE <= 1/sqrt(20000)); the same
    seed gives the same codes, another seed different ones; every code is one of the two neighbours."""
    fmt = NVFP4Format("te")
    g = torch.Generator().manual_seed(0)
    row = torch.randn(16, generator=g) * 3
    x = row.repeat(20000, 1)
    x[:, 0] = 10.0  # keep the block amax (and so every scale) fixed
    q_det, d_b, s_dec, _ = fmt.encode(x)
    q1 = fmt.encode(x, "stochastic", generator=torch.Generator().manual_seed(7))[0]
    q2 = fmt.encode(x, "stochastic", generator=torch.Generator().manual_seed(7))[0]
    q3 = fmt.encode(x, "stochastic", generator=torch.Generator().manual_seed(8))[0]
    assert torch.equal(q1, q2) and not torch.equal(q1, q3)
    v = (x[0] * torch.reciprocal(d_b[0, 0] * s_dec)).clamp(-6, 6)  # fl32(x·e_b), e_b = fl32(1/fl32(d_b·s_dec))
    mean = q1.reshape(20000, 16).mean(0)
    se = 1 / math.sqrt(20000)
    assert float((mean - v).abs().max()) < 5 * se
    lo = torch.tensor([float(grid_rn(E2M1, Fraction(float(t)))) for t in v])  # nearest, for reference
    assert float((q_det.reshape(20000, 16)[0] - lo).abs().max()) == 0
    assert float((q_det.reshape(20000, 16).mean(0) - v).abs().max()) > 10 * se  # nearest is biased here
    vals = lowp.get_format("e2m1")
    assert torch.equal(vals.quantize(q1), q1)  # codes are E2M1 values
    dn = vals.quantize(v.expand(20000, 16), "down")
    up = vals.quantize(v.expand(20000, 16), "up")
    qq = q1.reshape(20000, 16)
    assert bool(((qq == dn) | (qq == up)).all())
    y = fmt.quantize(x, "stochastic", generator=torch.Generator().manual_seed(7))
    assert torch.equal(y, ((q1 * d_b) * s_dec).reshape(x.shape))


def test_listed_by_lowp_formats():
    from lowp.cli.formats import rows

    names = {r["name"] for r in rows()}
    assert {"nvfp4", "nvfp4-torchao", "nvfp4-16x16", "fp8-row", "fp8-1x128", "fp8-128x128"} <= names
    for n in ("nvfp4-16x16", "fp8-128x128-pow2"):
        f = lowp.get_format(n)
        assert lowp.formats.format_from_dict(f.to_dict()) == f


@pytest.mark.parametrize("order", ["te", "torchao"])
def test_nvfp4_values_give_the_hardware_gemm_to_fp32_rounding(order):
    """The block-scaled GEMM never dequantizes element-wise: per 16-block of K it sums d_x·d_w·(q_x·q_w) and
    multiplies by the two per-tensor factors (TE: amax_x·amax_w / (6·6·448·448)). An FP32 GEMM of the values lowp
    hands on, fl32((q·d_b)·s_dec), agrees with that to FP32 rounding: here within 8·K·eps·(|X|·|W|ᵀ)."""
    g = torch.Generator().manual_seed(5)
    x = torch.randn(12, 64, generator=g) * torch.exp2(torch.randint(-3, 3, (12, 64), generator=g).float())
    w = torch.randn(10, 64, generator=g)
    fmt = NVFP4Format(order)
    qx, dx, _, _ = fmt.encode(x)
    qw, dw, _, _ = fmt.encode(w)
    ax, aw = x.abs().max().double(), w.abs().max().double()
    blocks = (qx.double() * dx.double()).unsqueeze(1) * (qw.double() * dw.double()).unsqueeze(0)  # (12, 10, 4, 16)
    hw = blocks.sum((-1, -2)) * (ax * aw / (6 * 6 * 448 * 448))
    ours = fmt.quantize(x) @ fmt.quantize(w).T
    bound = 8 * 64 * torch.finfo(torch.float32).eps * (x.abs().double() @ w.abs().double().T)
    assert bool((ours.double() - hw).abs().le(bound).all())
    assert not torch.equal(ours, (x @ w.T))  # (and the quantization itself is visible)
