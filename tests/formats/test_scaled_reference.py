"""Scaled formats against exact references: IntFormat, FixedFormat (Gupta <IL,FL>), DFPFormat, MXFormat (OCP MX
v1.0), E8M0 (vs ml_dtypes.float8_e8m0fnu) and TernaryFormat (vs brute force)."""
import itertools
import math
from fractions import Fraction

import ml_dtypes
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import lowp
from lowp.formats import DFPFormat, FixedFormat, IntFormat, MXFormat, TernaryFormat
from lowp.formats.scaled import round_to_int

from lowp_refs import FloatGrid, brute_ternary_error, round_int, round_to_grid, to_f32

MODES = ("nearest", "away", "zero", "up", "down")


def rand_tensor(shape, seed=0, spread=20):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g) * torch.exp2(torch.randint(-spread, spread, shape, generator=g).float())
    return x


def assert_same(got: torch.Tensor, exp, what=""):
    exp = torch.as_tensor(np.asarray(exp, dtype=np.float64)).reshape(got.shape)
    g = got.double()
    ok = (g == exp) | (torch.isnan(g) & torch.isnan(exp))
    assert bool(ok.all()), f"{what}: {int((~ok).sum())} mismatches, e.g. {g[~ok][:4].tolist()} vs {exp[~ok][:4].tolist()}"


# ---- integers ------------------------------------------------------------------------------------------------------

def int_reference(x: torch.Tensor, bits: int, mode: str, scale: float) -> list[float]:
    qmax = 2 ** (bits - 1) - 1
    s = Fraction(scale)
    out = []
    for v in x.reshape(-1).tolist():
        if math.isnan(v):
            out.append(math.nan)
            continue
        q = qmax if v == math.inf else -qmax if v == -math.inf else max(-qmax, min(qmax, round_int(Fraction(v) / s, mode)))
        out.append(to_f32(q * s))
    return out


@pytest.mark.parametrize("bits", [4, 8, 16])
@pytest.mark.parametrize("mode", MODES)
def test_int_per_tensor(bits, mode):
    x = rand_tensor((300,), seed=bits, spread=6)
    x[:3] = torch.tensor([float("nan"), float("inf"), 0.0])
    fmt = lowp.get_format(f"int{bits}")
    amax = float(x[torch.isfinite(x)].abs().max())
    scale = float(np.float32(amax / (2 ** (bits - 1) - 1)))  # the documented float32 scale
    assert float(fmt.scale_for(x)) == scale
    assert_same(fmt.quantize(x, mode), int_reference(x, bits, mode, scale), f"int{bits} {mode}")


@pytest.mark.parametrize("mode", MODES)
def test_int_per_channel_axis(mode):
    x = rand_tensor((5, 7, 3), seed=3, spread=4)
    x[2] = 0.0  # an all-zero slice: scale 1
    for axis in (0, 1, -1):
        fmt = IntFormat(8, axis=axis)
        got = fmt.quantize(x, mode)
        amax = x.abs().amax(dim=axis, keepdim=True)  # IntFormat's axis is the one reduced over
        for idx in itertools.product(*[range(n) for n in x.shape]):
            sl = list(idx)
            sl[axis] = 0
            a = float(amax[tuple(sl)])
            scale = float(np.float32(a / 127)) if a > 0 else 1.0
            assert float(got[idx]) == int_reference(x[idx].reshape(1), 8, mode, scale)[0], (axis, idx, mode)


@pytest.mark.parametrize("il,fl", [(2, 14), (4, 4), (1, 7), (8, 0), (12, 20)])
@pytest.mark.parametrize("mode", MODES)
def test_fixed_point(il, fl, mode):
    fmt = lowp.get_format(f"fixed<{il},{fl}>")
    lo, hi = -(2 ** (il - 1)), 2 ** (il - 1) - 2.0**-fl
    assert fmt.max == hi
    x = torch.cat([rand_tensor((400,), seed=il * 100 + fl, spread=il + 3) * 0.5,
                   torch.tensor([lo, hi, hi + 2.0**-fl, lo - 1, 2.0 ** (il + 2), float("inf"), float("-inf"),
                                 float("nan"), 2.0 ** (-fl - 1), -(2.0 ** (-fl - 1)), 1.5 * 2.0**-fl])])
    step = Fraction(2) ** -fl
    n = il + fl - 1
    exp = []
    for v in x.tolist():
        if math.isnan(v):
            exp.append(math.nan)
        elif math.isinf(v):
            exp.append(to_f32(Fraction(hi if v > 0 else lo)))
        else:  # the grid value, then rounded once to the float32 output (fixed<12,20> has 32-bit values)
            exp.append(to_f32(max(-(2**n), min(2**n - 1, round_int(Fraction(v) / step, mode))) * step))
    assert_same(fmt.quantize(x, mode), exp, f"fixed<{il},{fl}> {mode}")
    assert float(fmt.quantize(torch.tensor([1e9]))) == to_f32(Fraction(hi))
    assert float(fmt.quantize(torch.tensor([-1e9]))) == lo


# ---- dynamic fixed point -------------------------------------------------------------------------------------------

def dfp_block_reference(vals: list[float], bits: int, mode: str) -> list[float]:
    fin = [abs(v) for v in vals if math.isfinite(v)]
    a = max(fin) if fin else 0.0
    e = math.frexp(a)[1] - 1 if a > 0 else 0  # floor(log2 amax)
    step = Fraction(2) ** (e - (bits - 2))
    lim = 2 ** (bits - 1) - 1
    out = []
    for v in vals:
        if math.isnan(v):
            out.append(math.nan)
            continue
        q = lim if v == math.inf else -lim if v == -math.inf else max(-lim, min(lim, round_int(Fraction(v) / step, mode)))
        out.append(to_f32(q * step))
    return out


@pytest.mark.parametrize("bits", [8, 16])
@pytest.mark.parametrize("mode", MODES)
def test_dfp_per_tensor(bits, mode):
    x = rand_tensor((257,), seed=bits, spread=10)
    got = lowp.get_format(f"dfp{bits}").quantize(x, mode)
    assert_same(got, dfp_block_reference(x.tolist(), bits, mode), f"dfp{bits}")
    # nothing overflows: the largest magnitude keeps its sign and lies within one step of x
    i = int(x.abs().argmax())
    assert abs(float(got[i]) - float(x[i])) <= abs(float(x[i])) * 2.0 ** -(bits - 2)


@pytest.mark.parametrize("mode", MODES)
def test_dfp_per_block_with_partial_block(mode):
    x = rand_tensor((3, 50), seed=5, spread=12)
    x[1, 20] = float("nan")
    x[2, 33] = -float("inf")
    fmt = DFPFormat(8, block=16, axis=-1)
    got = fmt.quantize(x, mode)
    exp = torch.empty_like(x, dtype=torch.float64)
    for r in range(3):
        for b in range(0, 50, 16):
            exp[r, b:b + 16] = torch.tensor(dfp_block_reference(x[r, b:b + 16].tolist(), 8, mode))
    assert_same(got, exp.numpy(), f"dfp8 blocks {mode}")
    # along axis 0
    got0 = DFPFormat(8, block=2, axis=0).quantize(x, mode)
    for c in range(50):
        assert_same(got0[:2, c], dfp_block_reference(x[:2, c].tolist(), 8, mode), "axis 0")
        assert_same(got0[2:, c], dfp_block_reference(x[2:, c].tolist(), 8, mode), "axis 0 partial")


# ---- OCP MX v1.0 ---------------------------------------------------------------------------------------------------

def mx_block_reference(vals: list[float], fmt: MXFormat, mode: str = "nearest") -> list[float]:
    """OCP MX v1.0 §6.3: X = 2^(floor(log2 amax) - emax_elem) (E8M0, clamped to 2^-127..2^127); P_i = x_i / X
    quantized to the element format with saturation (``mode``; the spec's is nearest, ties to even); result X * P_i.
    Everything in exact rationals (P_i need not be a float32 value)."""
    fin = [abs(v) for v in vals if math.isfinite(v)]
    a = max(fin) if fin else 0.0
    el = fmt.element
    emax = 0 if el == "int8" else el.emax
    e = (math.frexp(a)[1] - 1 - emax) if a > 0 else -127
    X = Fraction(2) ** max(-127, min(127, e))
    out = []
    for v in vals:
        if not math.isfinite(v):
            out.append(v)
            continue
        p = Fraction(v) / X
        if el == "int8":
            pq = Fraction(max(-127, min(127, round_int(p * 64, mode))), 64)
        else:
            pq = round_to_grid(p, FloatGrid(el.exp, el.man, el.bias, el.special, el.subnormals), mode)
        out.append(to_f32(pq * X))
    return out


MX_NAMES = ["mxfp8_e4m3", "mxfp8_e5m2", "mxfp6_e3m2", "mxfp6_e2m3", "mxfp4_e2m1", "mxint8"]


@pytest.mark.parametrize("name", MX_NAMES)
@pytest.mark.parametrize("mode", MODES)
def test_mx_against_ocp_rules(name, mode):
    fmt = lowp.get_format(name)
    assert fmt.block == 32
    x = rand_tensor((4, 80), seed=len(name), spread=6)  # 80 = 2 full blocks + a partial one of 16 (zero-padded)
    x[1, :32] = 0.0  # an all-zero block
    x[2, 3] = float("nan")
    x[2, 40] = float("inf")
    x[3, 64:] *= 2.0**100  # a block near the top of E8M0
    x[0, 32:64] *= 2.0**-110  # float32-subnormal scaled block
    x[0, 70] = 2.0**-149  # far below the block's element grid: directed modes give 0 or the smallest element
    x[0, 71] = -(2.0**-149)
    got = fmt.quantize(x, mode)
    exp = torch.empty_like(x, dtype=torch.float64)
    for r in range(x.shape[0]):
        for b in range(0, x.shape[1], 32):
            exp[r, b:b + 32] = torch.tensor(mx_block_reference(x[r, b:b + 32].tolist(), fmt, mode),
                                            dtype=torch.float64)
    assert_same(got, exp.numpy(), f"{name} {mode}")


def test_mx_axis_and_saturation():
    fmt = MXFormat(lowp.get_format("e4m3"), axis=0)
    x = rand_tensor((64, 3), seed=9)
    got = fmt.quantize(x)
    for c in range(3):
        for b in (0, 32):
            assert_same(got[b:b + 32, c], mx_block_reference(x[b:b + 32, c].tolist(), fmt), "axis 0")
    # amax = 1.875 * 2^e: x/X = 1.875 * 2^8 = 480 > 448 saturates to 448 (never NaN)
    x = torch.zeros(32)
    x[0] = 1.875 * 2.0**3
    y = lowp.quantize(x, "mxfp8_e4m3")
    assert float(y[0]) == 448 * 2.0 ** (3 - 8)


def test_e8m0_against_ml_dtypes():
    e = np.arange(-127, 128, dtype=np.float64)
    p = np.exp2(e)
    mids = 1.5 * p
    cand = np.concatenate([p, mids, np.nextafter(mids.astype(np.float32), np.float32(np.inf)),
                           np.nextafter(mids.astype(np.float32), np.float32(-np.inf)), 3 * p, 1.25 * p, 1.75 * p,
                           [0.0, -0.0, -1.0, np.inf, -np.inf, np.nan, 1e-45, 1e-40, 3e38, 2.0**127 * 1.6]])
    with np.errstate(over="ignore"):
        x = cand.astype(np.float32)
    got = lowp.quantize(torch.from_numpy(x), "e8m0").numpy()
    with np.errstate(over="ignore", invalid="ignore"):
        exp = x.astype(ml_dtypes.float8_e8m0fnu).astype(np.float32)
    # ml_dtypes rounds every x in (2^-127, 1.5 * 2^-127) up to 2^-126; lowp rounds to the nearer power (2^-127)
    quirk = (x > 2.0**-127) & (x < 1.5 * 2.0**-127)
    exp = np.where(quirk, np.float32(2.0**-127), exp)
    assert quirk.sum() >= 2
    ok = (got == exp) | (np.isnan(got) & np.isnan(exp))
    assert ok.all(), list(zip(x[~ok][:5], got[~ok][:5], exp[~ok][:5]))
    # directed modes: up = smallest power of two >= x, down/zero = largest <= x
    xs = torch.tensor([3.0, 4.0, 0.3, 2.0**-126 * 1.1])
    assert lowp.quantize(xs, "e8m0", "up").tolist() == [4.0, 4.0, 0.5, 2.0**-125]
    assert lowp.quantize(xs, "e8m0", "down").tolist() == [2.0, 4.0, 0.25, 2.0**-126]


# ---- ternary -------------------------------------------------------------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(hnp.arrays(np.float64, st.integers(1, 6), elements=st.floats(-8, 8, width=32)))
def test_ternary_optimal_vs_brute_force(w):
    x = torch.from_numpy(w.astype(np.float32))
    y = TernaryFormat(group=len(w)).quantize(x).double().numpy()
    mags = np.unique(np.abs(y[y != 0]))
    assert len(mags) <= 1 or np.ptp(mags) <= 1e-6 * mags.max()  # one alpha per group
    assert np.all((y == 0) | (np.sign(y) == np.sign(w)))
    err = float(np.sum((w.astype(np.float32).astype(np.float64) - y) ** 2))
    assert err <= brute_ternary_error(w.astype(np.float32).astype(np.float64)) * (1 + 1e-5) + 1e-9


def test_ternary_groups_and_threshold_rule():
    w = rand_tensor((3, 10), seed=4, spread=2)
    y = TernaryFormat(group=4, method="threshold").quantize(w)
    for r in range(3):
        for b in range(0, 10, 4):
            g = w[r, b:b + 4].double()
            delta = 0.7 * float(g.abs().mean())  # the partial last group (2 weights): mean over its real entries
            keep = g.abs() > delta
            alpha = float(g.abs()[keep].mean()) if keep.any() else 0.0
            exp = torch.where(keep, torch.sign(g) * alpha, torch.zeros_like(g))
            assert torch.allclose(y[r, b:b + 4].double(), exp, rtol=1e-6, atol=0), (r, b)
    yo = TernaryFormat(group=4).quantize(w)
    for r in range(3):
        for b in range(0, 10, 4):
            g = w[r, b:b + 4].double().numpy()
            err = float(((g - yo[r, b:b + 4].double().numpy()) ** 2).sum())
            assert err <= brute_ternary_error(g) * (1 + 1e-5) + 1e-12


# ---- stochastic rounding to integers with explicit bits -----------------------------------------------------------

@pytest.mark.parametrize("k", [1, 4, 8, 32])
def test_round_to_int_given_bits(k):
    rng = np.random.default_rng(k)
    # dyadic values: frac is exact and floor(frac * 2^k) is the definition's top-k bits
    v = torch.from_numpy(rng.integers(-2**20, 2**20, 2000) / 2.0**rng.integers(0, 12, 2000))
    rand = torch.from_numpy(rng.integers(0, 2**k, 2000, dtype=np.int64))
    got = round_to_int(v, "stochastic", k, None, rand=rand)
    exp = []
    for val, r in zip(v.tolist(), rand.tolist()):
        fl = math.floor(Fraction(val))
        top = math.floor((Fraction(val) - fl) * 2**k)
        exp.append(fl + 1 if r + top >= 2**k else fl)
    assert got.tolist() == exp
