"""FloatFormat against ml_dtypes and torch's native casts, bit for bit, on exhaustive sweeps."""
import ml_dtypes
import numpy as np
import pytest
import torch

import lowp

ML = {
    "bf16": ml_dtypes.bfloat16, "fp16": np.float16, "e5m2": ml_dtypes.float8_e5m2, "e4m3": ml_dtypes.float8_e4m3fn,
    "e4m3fnuz": ml_dtypes.float8_e4m3fnuz, "e5m2fnuz": ml_dtypes.float8_e5m2fnuz, "e3m4": ml_dtypes.float8_e3m4,
    "e4m3ieee": ml_dtypes.float8_e4m3, "e2m3": ml_dtypes.float6_e2m3fn, "e3m2": ml_dtypes.float6_e3m2fn,
    "e2m1": ml_dtypes.float4_e2m1fn,
}


def all_values(dt) -> np.ndarray:
    """Every value of an ml_dtypes/numpy format, as float32 (all bit patterns)."""
    nbits = np.dtype(dt).itemsize * 8
    width = {"float4_e2m1fn": 4, "float6_e2m3fn": 6, "float6_e3m2fn": 6}.get(np.dtype(dt).name, nbits)
    pats = np.arange(2**width, dtype=np.uint16 if nbits == 16 else np.uint8).astype(np.uint16 if nbits == 16 else np.uint8)
    return pats.view(dt).astype(np.float32)


def sweep(dt) -> np.ndarray:
    """Values, midpoints, ±1 float32 ulp around midpoints, boundaries, specials, fp32 subnormals, random."""
    v = all_values(dt)
    fin = np.unique(v[np.isfinite(v)].astype(np.float64))
    mids = ((fin[1:] + fin[:-1]) / 2).astype(np.float32)  # exact: neighbours differ by a power-of-two multiple
    mx = float(ml_dtypes.finfo(dt).max) if dt is not np.float16 else 65504.0
    above = np.array([mx * (1 + 2.0**-k) for k in range(1, 12)] + [mx * 2, mx * 1e3], dtype=np.float32)
    rng = np.random.default_rng(0)
    rnd = (rng.standard_normal(100_000) * np.exp2(rng.uniform(-40, 40, 100_000))).astype(np.float32)
    sub = np.array([1e-45, 1e-42, 1e-39, 1.17e-38, -1e-45, -3e-40], dtype=np.float32)
    spec = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, -np.nan], dtype=np.float32)
    parts = [v, mids, np.nextafter(mids, np.float32(np.inf)), np.nextafter(mids, np.float32(-np.inf)),
             above, -above, sub, spec, rnd, -rnd]
    return np.concatenate(parts).astype(np.float32)


def bits_equal(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Elementwise: same bit pattern, or both NaN."""
    same = a.view(torch.int32) == b.view(torch.int32)
    return same | (torch.isnan(a) & torch.isnan(b))


def expected_ml(x: np.ndarray, dt, saturate: bool) -> np.ndarray:
    mx = float(ml_dtypes.finfo(dt).max) if dt is not np.float16 else 65504.0
    xi = np.clip(x, -mx, mx) if saturate else x
    with np.errstate(over="ignore", invalid="ignore"):
        y = xi.astype(dt).astype(np.float32)
    return np.where(np.isnan(x), np.float32(np.nan), y)  # lowp keeps NaN for every format


def assert_bits(x: np.ndarray, got: torch.Tensor, exp: np.ndarray, what: str):
    ok = bits_equal(got, torch.from_numpy(exp))
    if not bool(ok.all()):
        bad = torch.nonzero(~ok).flatten()[:8]
        rows = [(float(x[i]), float(got[i]), float(exp[i])) for i in bad]
        raise AssertionError(f"{what}: {int((~ok).sum())} mismatches, first (x, got, expected): {rows}")


@pytest.mark.parametrize("name", list(ML))
@pytest.mark.parametrize("saturate", [False, True])
def test_against_ml_dtypes(name, saturate):
    dt = ML[name]
    x = sweep(dt)
    got = lowp.quantize(torch.from_numpy(x), name, saturate=saturate)
    assert_bits(x, got, expected_ml(x, dt, saturate), f"{name} saturate={saturate}")


@pytest.mark.parametrize("name", ["e4m3", "e5m2", "bf16", "e2m1"])
def test_compiled_path_is_bit_identical(name):
    """Every rounding mode x saturate through the compiled kernel, forced regardless of size, against the eager
    reference; and Format.quantize (which picks the path by size) gives the same bits."""
    from lowp.formats import dispatch

    x = torch.from_numpy(np.resize(sweep(ML[name]), 1 << 17))
    params = lowp.get_format(name).kernel_params(torch.float32)
    for saturate in (False, True):
        for rounding in lowp.ROUNDING_MODES:
            a = dispatch.round_float_dispatch(x, params, rounding, saturate, 32, torch.Generator().manual_seed(1), None,
                                              force="eager")
            before = dispatch.compiled_calls
            b = dispatch.round_float_dispatch(x, params, rounding, saturate, 32, torch.Generator().manual_seed(1), None,
                                              force="compiled")
            assert dispatch.compiled_calls == before + 1
            assert bool(bits_equal(a, b).all()), (rounding, saturate)
            if rounding == "nearest":
                assert bool(bits_equal(lowp.get_format(name).quantize(x, saturate=saturate), a).all())


NATIVE = {"bf16": (torch.bfloat16, False), "fp16": (torch.float16, False), "e4m3": (torch.float8_e4m3fn, True),
          "e5m2": (torch.float8_e5m2, False)}


@pytest.mark.parametrize("name", list(NATIVE))
def test_against_torch_native_cast(name):
    dt, sat = NATIVE[name]
    x = torch.from_numpy(sweep(ML[name]))
    exp = x.to(dt).float()
    got = lowp.quantize(x, name, saturate=sat)
    assert_bits(x.numpy(), got, exp.numpy(), f"torch {dt}")


@pytest.mark.parametrize("name", ["bf16", "e4m3", "e2m1"])
def test_float64_and_half_inputs(name):
    dt = ML[name]
    x = sweep(dt)
    exp = expected_ml(x, dt, False)
    got64 = lowp.quantize(torch.from_numpy(x).double(), name)
    assert_bits(x, got64.float(), exp, "float64 input")
    # a float64 value just above a float32 midpoint must round up (no double rounding through float32)
    fin = np.unique(all_values(dt)[np.isfinite(all_values(dt))].astype(np.float64))
    fin = fin[(fin > 0) & (fin < float(ml_dtypes.finfo(dt).max))]
    mids = (fin[1:] + fin[:-1]) / 2
    xs = torch.from_numpy(np.nextafter(mids, np.inf))
    assert bool((lowp.quantize(xs, name) == torch.from_numpy(fin[1:])).all())
    h = torch.from_numpy(x).to(torch.bfloat16)
    assert torch.equal(lowp.quantize(h, name).float().view(torch.int32),
                       lowp.quantize(h.float(), name).to(torch.bfloat16).float().view(torch.int32))
