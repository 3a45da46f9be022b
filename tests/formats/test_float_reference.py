"""FloatFormat against the exact integer reference (tests/formats/lowp_refs.py) for every rounding mode.

Covers what ml_dtypes cannot check: tf32, fp8-152, fp16-169, arbitrary (exp, man, bias, special, subnormals) with
flush-to-zero, and the directed modes away/zero/up/down (IEEE 754 overflow: toward zero gives ±max) for every float
format; plus stochastic rounding with explicit random bits (rand_bits=k definition) on the kernel.
"""
import math

import ml_dtypes
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lowp
from lowp.formats import FloatFormat, round_reference
from lowp.formats.round_reference import MODE_CODE

from lowp_refs import FloatGrid, float_reference, from_units

MODES = ("nearest", "away", "zero", "up", "down")
FLOAT_NAMES = ["tf32", "bf16", "fp16", "e5m2", "e4m3", "e4m3fnuz", "e5m2fnuz", "e3m4", "e4m3ieee", "e2m3", "e3m2",
               "e2m1", "fp8-152", "fp16-169"]


def grid_of(fmt: FloatFormat) -> FloatGrid:
    return FloatGrid(fmt.exp, fmt.man, fmt.bias, fmt.special, fmt.subnormals)


def float32_exact(v: np.ndarray) -> np.ndarray:
    """Keep the float64 values that are exactly float32 values (finite)."""
    v = v[np.isfinite(v)]
    with np.errstate(over="ignore"):
        f = v.astype(np.float32)
    return f[(f.astype(np.float64) == v)]


def inputs(fmt: FloatFormat, n_values: int = 1500, seed: int = 0) -> np.ndarray:
    """Format values, midpoints, ±1 float32 ulp around them, the overflow region, float32 subnormals, specials and
    random values; large formats are subsampled to ``n_values`` neighbour pairs."""
    rng = np.random.default_rng(seed)
    g = grid_of(fmt)
    vals = np.array([from_units(u) for u in g.vals], dtype=np.float64)  # includes the step above max
    idx = np.arange(len(vals) - 1)
    if len(idx) > n_values:
        idx = np.unique(np.concatenate([idx[:50], idx[-50:], rng.choice(idx, n_values, replace=False)]))
    lo, hi = vals[idx], vals[idx + 1]
    mids = float32_exact((lo + hi) / 2)
    mx = from_units(g.max)
    over = np.array([mx * (1 + 2.0**-k) for k in range(1, 14)] + [mx * 2, mx * 1e3, 3e38], dtype=np.float64)
    rnd = rng.standard_normal(1000) * np.exp2(rng.uniform(math.log2(fmt.min_normal) - fmt.man - 4,
                                                          min(127, fmt.emax + 2), 1000))
    parts = [float32_exact(lo), mids, np.nextafter(mids, np.float32(np.inf)), np.nextafter(mids, np.float32(-np.inf)),
             float32_exact(over), np.array([1e-45, 1e-42, 1e-39, 1.17e-38], dtype=np.float32),
             rnd.astype(np.float32)]
    pos = np.concatenate(parts).astype(np.float32)
    pos = pos[np.isfinite(pos)]
    spec = np.array([0.0, -0.0, np.inf, -np.inf, np.nan], dtype=np.float32)
    return np.concatenate([pos, -pos, spec])


def check(fmt: FloatFormat, x: np.ndarray, mode: str, saturate: bool, dtype=torch.float32):
    g = grid_of(fmt)
    got = fmt.quantize(torch.from_numpy(x).to(dtype), mode, saturate=saturate).double().numpy()
    exp = np.array([float_reference(g, float(v), mode, saturate) for v in x], dtype=np.float64)
    same = (got == exp) & (np.signbit(got) == np.signbit(exp))
    same |= np.isnan(got) & np.isnan(exp)
    if not same.all():
        bad = np.flatnonzero(~same)[:6]
        raise AssertionError(f"{fmt} {mode} saturate={saturate}: {(~same).sum()} mismatches; (x, got, expected): "
                             f"{[(float(x[i]), float(got[i]), float(exp[i])) for i in bad]}")


def test_reference_agrees_with_ml_dtypes():
    """The reference itself, checked where an oracle exists (nearest, default overflow)."""
    for name, dt in [("e4m3", ml_dtypes.float8_e4m3fn), ("e5m2", ml_dtypes.float8_e5m2),
                     ("e3m2", ml_dtypes.float6_e3m2fn), ("e4m3fnuz", ml_dtypes.float8_e4m3fnuz)]:
        fmt = lowp.get_format(name)
        g = grid_of(fmt)
        x = inputs(fmt)
        x = x[~np.isnan(x)]
        with np.errstate(over="ignore", invalid="ignore"):
            oracle = x.astype(dt).astype(np.float64)
        ref = np.array([float_reference(g, float(v), "nearest") for v in x])
        same = (oracle == ref) & (np.signbit(oracle) == np.signbit(ref)) | (np.isnan(oracle) & np.isnan(ref))
        assert same.all(), (name, x[~same][:5])


@pytest.mark.parametrize("name", FLOAT_NAMES)
def test_named_formats_all_modes(name):
    fmt = lowp.get_format(name)
    x = inputs(fmt, n_values=800)
    for mode in MODES:
        for saturate in (False, True):
            check(fmt, x, mode, saturate)


def test_ibm_formats_value_sets():
    """fp8-152 is (1,5,2) bias 15 = the e5m2 value set; fp16-169 is (1,6,9) bias 31, max (2 - 2^-9) * 2^31."""
    f152, f169 = lowp.get_format("fp8-152"), lowp.get_format("fp16-169")
    assert (f152.exp, f152.man, f152.bias) == (5, 2, 15) and f152.max == 57344.0
    assert (f169.exp, f169.man, f169.bias) == (6, 9, 31)
    assert f169.max == (2 - 2.0**-9) * 2.0**31 and f169.min_normal == 2.0**-30 and f169.min_subnormal == 2.0**-39
    assert lowp.get_format("tf32").max == (2 - 2.0**-10) * 2.0**127


@pytest.mark.parametrize("name", ["fp16-169", "e4m3", "e2m1", "tf32"])
def test_float64_input_all_modes(name):
    """float64 input rounds from its own bits: compare against the reference on float32-exact inputs plus values
    a float64 ulp beside each midpoint (which float32 cannot hold)."""
    fmt = lowp.get_format(name)
    x = inputs(fmt, n_values=300)
    for mode in ("nearest", "up", "down"):
        check(fmt, x, mode, False, dtype=torch.float64)
    g = grid_of(fmt)
    vals = np.array([from_units(u) for u in g.vals[: min(len(g.vals) - 1, 400)]])
    mids = (vals[1:] + vals[:-1]) / 2
    for side, want in ((np.inf, vals[1:]), (-np.inf, vals[:-1])):
        xs = np.nextafter(mids, side)
        got = fmt.quantize(torch.from_numpy(xs)).numpy()
        assert (got == want).all(), name


fmt_params = st.tuples(st.integers(2, 8), st.integers(0, 12), st.sampled_from(["ieee", "fn", "fnuz", "none"]),
                       st.booleans(), st.integers(-6, 6))


def make_format(p) -> FloatFormat | None:
    exp, man, special, sub, dbias = p
    if special == "fn" and exp == 1 and man == 0:
        return None
    bias = 2 ** (exp - 1) - 1 + dbias
    try:
        return FloatFormat(exp, man, bias=bias, special=special, subnormals=sub)
    except ValueError:
        return None


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(p=fmt_params, seed=st.integers(0, 2**16), mode=st.sampled_from(MODES), saturate=st.booleans())
def test_arbitrary_formats(p, seed, mode, saturate):
    fmt = make_format(p)
    if fmt is None:
        return
    x = inputs(fmt, n_values=200, seed=seed)
    check(fmt, x, mode, saturate)


def test_flush_to_zero():
    f = FloatFormat(4, 3, special="fn", subnormals=False)
    tiny = f.min_normal
    x = torch.tensor([tiny * 0.5, -tiny * 0.75, tiny, tiny * 0.999, -tiny * 0.97], dtype=torch.float32)
    y = f.quantize(x)
    # 0.999 and 0.97 of min normal round *up* to min normal (kept); the subnormal results flush to signed zero
    assert y.tolist() == [0.0, -0.0, tiny, tiny, -tiny] and torch.signbit(y[1])
    assert f.min_subnormal is None
    check(f, inputs(f), "nearest", False)


def test_identity_formats():
    x = torch.randn(1000) * torch.exp2(torch.randint(-140, 120, (1000,)).float())
    for name in ("fp32",):
        assert torch.equal(lowp.quantize(x, name).view(torch.int32), x.view(torch.int32))
    # a format wider than the input (fp32 grid, float16 input) is the identity
    h = torch.randn(1000).half()
    assert torch.equal(lowp.quantize(h, "fp32").view(torch.int16), h.view(torch.int16))
    assert torch.equal(lowp.quantize(h, "tf32").view(torch.int16), h.view(torch.int16))


# ---- stochastic rounding with explicit random bits: the rand_bits=k definition, exactly ------------------------------

def kernel_round(fmt: FloatFormat, x: torch.Tensor, rand: torch.Tensor, k: int, saturate=False):
    p = fmt.kernel_params(x.dtype)
    return round_reference.round_float(x, **p, mode=torch.tensor(MODE_CODE["stochastic"]),
                                       saturate=torch.tensor(saturate), rand=rand,
                                       rand_k=torch.tensor(k, dtype=torch.int64))


@pytest.mark.parametrize("name", ["e5m2", "e4m3", "fp16-169", "e2m1", "bf16"])
@pytest.mark.parametrize("k", [1, 3, 8, 13, 32])
def test_stochastic_given_bits(name, k):
    fmt = lowp.get_format(name)
    g = grid_of(fmt)
    rng = np.random.default_rng(k)
    x = inputs(fmt, n_values=300, seed=k)
    x = x[np.isfinite(x)]
    rand = rng.integers(0, 2**k, size=x.shape, dtype=np.int64)
    # make sure both extremes of the random word are exercised
    rand[:5], rand[5:10] = 0, 2**k - 1
    got = kernel_round(fmt, torch.from_numpy(x), torch.from_numpy(rand), k).double().numpy()
    exp = np.array([float_reference(g, float(v), "stochastic", rand=int(r), rand_k=k) for v, r in zip(x, rand)])
    same = ((got == exp) & (np.signbit(got) == np.signbit(exp))) | (np.isnan(got) & np.isnan(exp))
    assert same.all(), [(x[i], got[i], exp[i], rand[i]) for i in np.flatnonzero(~same)[:5]]
