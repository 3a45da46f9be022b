"""lowp.matmul with accumulation in a format (ops/accumulate.py) against a plain-Python oracle: exact products and sums as
fractions.Fraction, each partial sum rounded by a Fraction-based round-to-nearest-even written here."""
import math
import os
from fractions import Fraction

import zlib

import pytest
import torch

import lowp
from lowp.formats import FloatFormat
from lowp.ops.accumulate import matmul, significand_bits


def rn(x, fmt: FloatFormat):
    """Round a Fraction (or ±inf/nan float) to ``fmt``: nearest, ties to even; overflow per the format's policy."""
    if isinstance(x, float):
        return x
    if x == 0:
        return Fraction(0)
    e = math.floor(math.log2(abs(x)))  # fix up the float estimate exactly
    while Fraction(2) ** e > abs(x):
        e -= 1
    while Fraction(2) ** (e + 1) <= abs(x):
        e += 1
    quantum = Fraction(2) ** (max(e, fmt.emin) - fmt.man)
    y = round(x / quantum) * quantum  # Fraction.__round__ is ties-to-even
    if abs(y) > Fraction(fmt.max):
        if fmt.special == "ieee":
            return math.copysign(math.inf, y)
        return math.nan if fmt.special in ("fn", "fnuz") else Fraction(fmt.max) * (1 if y > 0 else -1)
    return y


def add(s, p, fmt):
    if isinstance(s, float) or isinstance(p, float):  # inf/nan arithmetic
        return rn(float(s) + float(p), fmt)
    return rn(s + p, fmt)


def prod(x: float, y: float):
    if math.isfinite(x) and math.isfinite(y):
        return Fraction(x) * Fraction(y)
    return x * y


def oracle(a, b, fmt, chunk):
    """Sequential loops per output element: chunk register starts with its first product (exact), RN after each
    add; the chunk results are summed the same way; the result is RN of the total."""
    m, k = a.shape
    n = b.shape[1]
    c = k if chunk is None or chunk <= 1 or chunk >= k else chunk
    out = torch.empty(m, n, dtype=torch.float64)
    for i in range(m):
        for j in range(n):
            prods = [prod(float(a[i, t]), float(b[t, j])) for t in range(k)]
            chunks = []
            for s0 in range(0, k, c):
                r = prods[s0]
                for p in prods[s0 + 1:s0 + c]:
                    r = add(r, p, fmt)
                chunks.append(r)
            t = chunks[0]
            for r in chunks[1:]:
                t = add(t, r, fmt)
            out[i, j] = float(rn(t, fmt))
    return out


def same(x, y):
    return bool(((x == y) | (torch.isnan(x) & torch.isnan(y))).all())


FORMATS = ["fp16", "bf16", "fp16-169", "e5m2", "e4m3"]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("chunk", [None, 2, 3, 5, 8])
@pytest.mark.parametrize("operands", ["fp32", "e5m2"])
def test_bit_exact_against_fraction_oracle(fmt, chunk, operands):
    g = torch.Generator().manual_seed(zlib.crc32(repr((fmt, chunk, operands)).encode()))  # same seed every run
    a = torch.randn(3, 13, generator=g) * 4
    b = torch.randn(13, 4, generator=g) * torch.rand(13, 1, generator=g) * 3
    if operands != "fp32":
        a, b = lowp.quantize(a, operands), lowp.quantize(b, operands)
    f = lowp.get_format(fmt)
    got = matmul(a, b, accumulate=fmt, chunk=chunk)
    assert got.dtype == torch.float32
    ref = oracle(a, b, f, chunk)
    assert same(got.double(), ref), (got, ref)
    assert same(lowp.quantize(got, fmt), got)  # every value on the accumulator grid


def test_swamping_cases_exact():
    """Values that swamp: one large term then many small ones, mixed signs, cancellation to zero."""
    f = lowp.get_format("fp16")
    a = torch.tensor([[2048.0] + [1.0] * 9 + [-2048.0] + [0.5] * 5, [1.0, -1.0] * 8])
    b = torch.ones(16, 2)
    b[:, 1] = torch.linspace(-1, 1, 16)
    for chunk in (None, 4, 16, 100):
        assert same(matmul(a, b, accumulate=f, chunk=chunk).double(), oracle(a, b, f, chunk))
    # sequential fp16: 2048 + 1 = 2049 -> 2048 (tie to even), the ones are lost
    assert matmul(a, b, accumulate="fp16")[0, 0] == 2.5


def test_chunk_k_and_one_mean_plain_sequential():
    g = torch.Generator().manual_seed(3)
    a, b = torch.randn(5, 40, generator=g), torch.randn(40, 6, generator=g)
    plain = matmul(a, b, accumulate="fp16")
    for c in (1, 40, 41, 1000):
        assert torch.equal(matmul(a, b, accumulate="fp16", chunk=c), plain)
    assert not torch.equal(matmul(a, b, accumulate="fp16", chunk=8), plain)  # chunking changes the rounding


def test_overflow_nan_inf_and_range_rules():
    """Paths with the general kernel: partial sums that overflow, Inf and NaN inputs, flush-to-zero formats."""
    f16 = lowp.get_format("fp16")
    a = torch.tensor([[60000.0, 60000.0, -60000.0], [1.0, float("nan"), 1.0], [1.0, float("inf"), 2.0]])
    b = torch.ones(3, 1)
    got = matmul(a, b, accumulate=f16)
    ref = oracle(a, b, f16, None)
    assert same(got.double(), ref)
    assert got[0, 0] == math.inf  # overflow to Inf stays Inf although the exact total is 60000
    e4 = lowp.get_format("e4m3")  # fn: overflow gives NaN
    got = matmul(torch.tensor([[300.0, 300.0, -300.0]]), torch.ones(3, 1), accumulate=e4)
    assert torch.isnan(got).all()
    ftz = FloatFormat(5, 10, subnormals=False, name="fp16ftz")
    a = torch.tensor([[2.0**-20, 2.0**-20, 2.0**-14]])
    assert matmul(a, torch.ones(3, 1), accumulate=ftz)[0, 0] == 2.0**-14  # 2^-20 + 2^-20 flushed to 0
    assert matmul(a, torch.ones(3, 1), accumulate="fp16")[0, 0] == 2.0**-14 + 2.0**-19


def test_signed_zero_and_fp32_accumulator():
    a = torch.tensor([[-0.0, -0.0], [1e-30, -1e-30]])
    got = matmul(a, torch.ones(2, 1), accumulate="fp16")
    assert torch.signbit(got[0, 0]) and got[0, 0] == 0 and not torch.signbit(got[1, 0])
    tiny = matmul(torch.tensor([[-2.0**-30]]), torch.ones(1, 1), accumulate="fp16")  # rounds to -0
    assert tiny[0, 0] == 0 and torch.signbit(tiny[0, 0])
    # fp32 accumulator on fp32 operands (48-bit products: the round-to-odd path)
    g = torch.Generator().manual_seed(5)
    a, b = torch.randn(4, 50, generator=g), torch.randn(50, 3, generator=g)
    assert same(matmul(a, b, accumulate="fp32").double(), oracle(a, b, lowp.get_format("fp32"), None))


def test_batched_broadcast_and_vectors():
    g = torch.Generator().manual_seed(7)
    a, b = torch.randn(2, 1, 3, 9, generator=g), torch.randn(4, 9, 5, generator=g)
    got = matmul(a, b, accumulate="bf16", chunk=4)
    assert got.shape == (2, 4, 3, 5)
    for i in range(2):
        for j in range(4):
            assert torch.equal(got[i, j], matmul(a[i, 0], b[j], accumulate="bf16", chunk=4))
    v = torch.randn(9, generator=g)
    assert torch.equal(matmul(v, b[0], accumulate="fp16"), matmul(v[None], b[0], accumulate="fp16")[0])
    assert torch.equal(matmul(a[0, 0], v, accumulate="fp16"), matmul(a[0, 0], v[:, None], accumulate="fp16")[:, 0])
    assert matmul(v, v, accumulate="fp16").shape == ()
    torch.testing.assert_close(matmul(a, b, accumulate="fp32"), torch.matmul(a, b))
    assert torch.equal(matmul(a, b), torch.matmul(a, b))  # accumulate=None is torch.matmul


def test_bad_arguments():
    a = torch.ones(2, 3)
    with pytest.raises(ValueError, match="chunk"):
        matmul(a, a.t(), accumulate="fp16", chunk=0)
    with pytest.raises(ValueError, match="cannot be multiplied"):
        matmul(a, a, accumulate="fp16")
    with pytest.raises(ValueError, match="unknown format"):
        matmul(a, a.t(), accumulate="fp17")
    with pytest.raises(ValueError, match="int8"):
        matmul(a, a.t(), accumulate="int8")
    with pytest.raises(TypeError, match="floating point"):
        matmul(a.long(), a.t(), accumulate="fp16")


def test_significand_bits():
    assert significand_bits(torch.tensor([1.0, 0.0, 3.0])) == 2
    assert significand_bits(lowp.quantize(torch.randn(1000), "e5m2")) <= 3
    assert significand_bits(torch.tensor([1.0 + 2.0**-23])) == 24
    assert significand_bits(torch.tensor([1.0 + 2.0**-52], dtype=torch.float64)) == 53


def test_swamping_demonstration():
    """4096 values of similar magnitude summed in fp16: sequential accumulation stalls once the sum's half-ulp
    exceeds the addends (swamping); chunks of 64 keep the partial sums small."""
    g = torch.Generator().manual_seed(0)
    x = lowp.quantize(torch.rand(8, 4096, generator=g) * 0.5 + 0.5, "fp16")  # uniform(0.5, 1), exact in fp16
    ones = torch.ones(4096, 1)
    exact = x.double().sum(1)
    seq = matmul(x, ones, accumulate="fp16")[:, 0].double()
    chunked = matmul(x, ones, accumulate="fp16", chunk=64)[:, 0].double()
    err_seq = ((seq - exact).abs() / exact).max().item()
    err_chunk = ((chunked - exact).abs() / exact).max().item()
    print(f"\nsum of 4096 x ~ U(0.5, 1) in fp16: exact ≈ {exact[0]:.1f}, sequential {seq[0]:.0f} "
          f"(rel. error {err_seq:.2e}), chunk 64 {chunked[0]:.0f} (rel. error {err_chunk:.2e})")
    assert err_seq > 0.25  # stalls at 2048 (ulp 2 there: adding x < 1 rounds back), exact ≈ 3072
    assert err_chunk < 5e-3  # chunk sums ≈ 48 and the total both keep ~2^-11 relative accuracy per add
    assert err_chunk < err_seq / 50
    ones_seq = matmul(torch.ones(1, 4096), ones, accumulate="fp16")[0, 0]
    ones_chunk = matmul(torch.ones(1, 4096), ones, accumulate="fp16", chunk=64)[0, 0]
    print(f"sum of 4096 ones in fp16: sequential {ones_seq:.0f}, chunk 64 {ones_chunk:.0f}")
    assert ones_seq == 2048 and ones_chunk == 4096


@pytest.mark.parametrize("fmt", ["fp16", "bf16", "fp16-169", "e5m2", "e4m3fnuz", "fp32"])
def test_fast_rounding_is_the_general_kernel(fmt):
    """The magic-number rounding used on the fast path equals Format.quantize (float64 kernel) bit for bit on
    every grid value, every midpoint and their float64 neighbours, over the in-range part of the format."""
    from lowp.ops.accumulate import _Rounder

    f = lowp.get_format(fmt)
    g = torch.Generator().manual_seed(11)
    e = torch.randint(f.emin - f.man - 2, f.emax + 1, (20000,), generator=g)
    m = torch.randint(0, 2 ** (f.man + 2), (20000,), generator=g)
    base = torch.ldexp(1.0 + m.double() / 2 ** (f.man + 2), e.double())  # includes grid points and midpoints
    x = torch.cat([base, torch.nextafter(base, torch.tensor(math.inf, dtype=torch.float64)),
                   torch.nextafter(base, torch.tensor(0.0, dtype=torch.float64)), torch.zeros(1)])
    x = torch.cat([x, -x])
    x = x[x.abs() <= f.max]
    out, ibuf = torch.empty_like(x), torch.empty(x.shape, dtype=torch.int64)
    r = _Rounder(f, fast=True, odd=False)
    r.round_(x, out, ibuf)
    ref = f.quantize(x)
    if f.special == "fnuz":
        out = out + 0.0  # fnuz has no -0: ``finish`` applies this at the end of an accumulation
    assert torch.equal(out.view(torch.int64), ref.view(torch.int64))


# ---- compiled float32 fast path (lowp/ops/accumulate_compiled.py) ----------------------------------------------------

def test_veltkamp_rounding_is_the_general_kernel():
    """The float32 Veltkamp rounding of the fast path equals Format.quantize bit for bit for p = 3..11 on two
    binades: every pattern of the top 15 mantissa bits with low byte 0, 1 or 0xFF (all p-bit grid points, midpoints
    and their float32 neighbours for p <= 16), and on random values."""
    from lowp.ops.accumulate_compiled import _rnd

    hi = torch.arange(0, 2**15, dtype=torch.int64) << 8
    m = torch.cat([hi, hi | 1, hi | 0xFF])
    x = torch.cat([(m | (127 << 23)).to(torch.int32).view(torch.float32),  # [1, 2)
                   (m | (100 << 23)).to(torch.int32).view(torch.float32)])  # [2^-27, 2^-26)
    g = torch.Generator().manual_seed(2)
    x = torch.cat([x, torch.randn(100000, generator=g) * 2.0 ** torch.randint(-20, 20, (100000,), generator=g)])
    x = torch.cat([x, -x])
    for p in range(3, 12):
        f = FloatFormat(8, p - 1, name=f"e8m{p - 1}")  # float32's range: no subnormal/overflow effects here
        got = _rnd(x, torch.tensor(float(2 ** (24 - p) + 1)))
        assert torch.equal(got.view(torch.int32), f.quantize(x.double()).float().view(torch.int32)), p


@pytest.fixture
def fast_always(monkeypatch):
    """The compiled path whenever it is exact, at every size (the package's one switch)."""
    from lowp.formats.compiling import compiled_at_any_size

    monkeypatch.delenv("LOWP_COMPILE", raising=False)
    with compiled_at_any_size():
        yield


def _ref(a, b, fmt, chunk):
    """The float64 reference path (compiling switched off)."""
    old = os.environ.get("LOWP_COMPILE")
    os.environ["LOWP_COMPILE"] = "0"
    try:
        return matmul(a, b, accumulate=fmt, chunk=chunk)
    finally:
        if old is None:
            del os.environ["LOWP_COMPILE"]
        else:
            os.environ["LOWP_COMPILE"] = old


def _bits_equal(x, y):
    return x.dtype == y.dtype and x.shape == y.shape and torch.equal(x.view(torch.int32), y.view(torch.int32))


@pytest.mark.parametrize("fmt,chunk,ops", [("fp16-169", 64, "fp8-152"), ("fp16-169", None, "fp8-152"),
                                           ("fp16-169", 5, "e4m3"), ("bf16", 16, "fp8-152"),
                                           ("fp16", 8, "e4m3"), ("e4m3fnuz", 3, "pow2")])
def test_fast_path_bit_identical_to_reference(fast_always, fmt, chunk, ops):
    """The compiled float32 path is taken (counter) and equals the float64 reference path bit for bit, signed zeros
    included; odd sizes (padding of chunks, rows, chunk count), batches, tiny (fp8 subnormal) operands."""
    import lowp.ops.accumulate_compiled as af

    g = torch.Generator().manual_seed(zlib.crc32(repr((fmt, chunk, ops)).encode()))  # same seed every run
    a, b = torch.randn(2, 37, 203, generator=g) * 4, torch.randn(203, 45, generator=g)
    if ops != "pow2":
        a, b = lowp.quantize(a, ops), lowp.quantize(b, ops)
    else:  # 1-bit operands into a 4-bit accumulator, products >= 2^-8 (e4m3fnuz: emin - man = -10)
        a = torch.sign(a) * 2.0 ** torch.randint(-5, -1, a.shape, generator=g).float()
        b = torch.sign(b) * 2.0 ** torch.randint(-3, 1, b.shape, generator=g).float()
        a, b = a[..., :20], b[:20]  # the overflow bound grows as (1 + 2^-p)^K: keep K small for p = 4
    if ops == "fp8-152":
        a[0, :3] = lowp.quantize(a[0, :3] * 2.0**-14, ops)  # subnormal fp8 operands: products down to 2^-32
        b[:, :2] = lowp.quantize(b[:, :2] * 2.0**-14, ops)
    a[1, 0] = -0.0
    b[:, 3] = -0.0  # columns of signed zeros
    b[:100, 4] = 0.0
    before = af.fast_calls
    got = matmul(a, b, accumulate=fmt, chunk=chunk)
    assert af.fast_calls == before + 1, "the fast path was not taken"
    assert _bits_equal(got, _ref(a, b, fmt, chunk))


def test_fast_path_matches_fraction_oracle(fast_always):
    import lowp.ops.accumulate_compiled as af

    g = torch.Generator().manual_seed(9)
    a = lowp.quantize(torch.randn(2, 50, generator=g) * 8, "fp8-152")
    b = lowp.quantize(torch.randn(50, 17, generator=g), "fp8-152")
    f = lowp.get_format("fp16-169")
    for chunk in (None, 16, 7):
        before = af.fast_calls
        got = matmul(a, b, accumulate=f, chunk=chunk)
        assert af.fast_calls == before + 1
        assert same(got.double(), oracle(a, b, f, chunk))


def test_fast_path_large_and_transposed(fast_always):
    """A shape with several row blocks and a narrow output (computed transposed), against the reference."""
    import lowp.ops.accumulate_compiled as af

    g = torch.Generator().manual_seed(4)
    a = lowp.quantize(torch.randn(300, 130, generator=g), "fp8-152")
    b = lowp.quantize(torch.randn(130, 700, generator=g), "fp8-152")
    before = af.fast_calls
    for x, y in ((a, b), (b.t(), a.t())):  # N = 700 wide; then N = 300 with M = 700
        assert _bits_equal(matmul(x, y, accumulate="fp16-169", chunk=64), _ref(x, y, "fp16-169", 64))
    x, y = b.t()[:, :64], a.t()[:64, :7]  # N = 7 < 16: computed as (y^T x^T)^T
    assert _bits_equal(matmul(x, y, accumulate="fp16-169", chunk=8), _ref(x, y, "fp16-169", 8))
    assert af.fast_calls == before + 3


def test_fast_path_declines_when_not_exact(fast_always):
    """Cases the float32 path cannot do exactly go to the reference path: too many operand bits, accumulator
    subnormals finer than the products, possible overflow, Inf/NaN, a flush-to-zero format, p > 11."""
    import lowp.ops.accumulate_compiled as af

    g = torch.Generator().manual_seed(6)
    a8 = lowp.quantize(torch.randn(8, 40, generator=g), "fp8-152")
    b8 = lowp.quantize(torch.randn(40, 24, generator=g), "fp8-152")
    tiny = a8 * 2.0**-14  # fp8 subnormal-sized: products below fp16's subnormal quantum 2^-24
    big = torch.full((8, 40), 57344.0)
    nan = a8.clone()
    nan[0, 0] = math.nan
    ftz = FloatFormat(6, 9, bias=31, subnormals=False, name="fp16-169ftz")
    cases = [(torch.randn(8, 40, generator=g), b8, "fp16-169"), (tiny, b8, "fp16"), (big, b8 * 100, "fp16"),
             (nan, b8, "fp16-169"), (tiny, b8 * 2.0**-10, ftz), (a8, b8, "fp32")]
    for a, b, fmt in cases:
        before = af.fast_calls
        got = matmul(a, b, accumulate=fmt)
        assert af.fast_calls == before, fmt
        assert got.shape == (8, 24)
    # and the reference path is what ran: compare a small case with the oracle
    got = matmul(tiny[:2, :12], b8[:12, :3], accumulate="fp16")
    assert same(got.double(), oracle(tiny[:2, :12], b8[:12, :3], lowp.get_format("fp16"), None))


def test_fast_path_off_with_lowp_compile_0(fast_always, monkeypatch):
    import lowp.ops.accumulate_compiled as af

    monkeypatch.setenv("LOWP_COMPILE", "0")
    a = lowp.quantize(torch.randn(30, 64), "fp8-152")
    before = af.fast_calls
    matmul(a, a.t(), accumulate="fp16-169", chunk=16)
    assert af.fast_calls == before


def test_auto_path_threshold():
    """In the default mode small GEMMs use the reference path and large ones the fast path."""
    import lowp.ops.accumulate_compiled as af
    from lowp.formats.compiling import compile_enabled

    if not compile_enabled():
        pytest.skip("LOWP_COMPILE=0")
    a = lowp.quantize(torch.randn(64, 64), "fp8-152")
    before = af.fast_calls
    matmul(a, a, accumulate="fp16-169", chunk=64)  # 2^18 = MIN_WORK
    matmul(a[:8], a, accumulate="fp16-169", chunk=64)
    assert af.fast_calls == before + 1
