"""Every compiled rounding kernel × every rounding mode it supports × saturate, forced regardless of size, against
its eager reference, bit for bit, with the compiled path shown taken (``dispatch.compiled_calls``).

Size alone would send these small inputs to the eager kernels (fewer than ``FAST_MIN_NUMEL`` elements), so the
directed modes of the MX, int and scaled kernels would never run compiled while emulated training always takes
them; here the compiled path is forced (``compiling.compiled_at_any_size()``, or ``force="compiled"``) and the
reference is the eager code (``LOWP_COMPILE=0``, or ``force="eager"``), itself tested against ml_dtypes and exact
oracles elsewhere.

Inputs: every rounding-relevant class of float32 bit pattern — both signs × all 256 exponent fields (zeros and
subnormals included) × mantissas whose low s bits are 0, 1, half - 1, half, half + 1, all ones and the tie with an
odd kept bit, for every dropped-bit count s = 1..23 (so ties and their neighbours for every target precision and
every binade; after a block or tensor scale they are still near ties), the largest finite values, ±Inf, NaNs with
payloads, and random bit patterns. Kernels whose result depends on a whole tensor or block (amax scales) also get
a finite-only input and a subnormal-only input, where a single Inf or NaN would not decide every element.

Graphs: one per (kernel, rounding mode) (format parameters are tensors), one per (format, saturate, variant,
rounding) for the short paths, and MX one per block length; inputs of several sizes reuse them (dynamic shapes),
so no test here recompiles past dynamo's limit.
"""
from __future__ import annotations

import contextlib

import pytest
import torch

import lowp
from lowp.formats import compiling, dispatch, get_format, round_short_compiled
from lowp.formats.block import MXFormat
from lowp.formats.integer import IntFormat
from lowp.scaling import current_scale

MODES = lowp.ROUNDING_MODES
SHORT_ROUNDINGS = round_short_compiled.ROUNDINGS
#: float formats of every special-value policy (ieee, fn, fnuz, none), with and without subnormals and saturation
FLOATS = ("e4m3", "e5m2", "e4m3fnuz", "e2m1", "e3m2", "fp16", "bf16", "tf32")


def _to_f32(bits: torch.Tensor) -> torch.Tensor:
    return (bits - ((bits >> 31) << 32)).to(torch.int32).view(torch.float32)


def bit_classes() -> torch.Tensor:
    """The float32 inputs of the module docstring (~64k values, fixed order and seed)."""
    low = set()
    for s in range(1, 24):
        half = 1 << (s - 1)
        low |= {0, 1, half - 1, half, half + 1, (1 << s) - 1, (1 << s) | half}
    mant = torch.tensor(sorted(v & 0x7FFFFF for v in low), dtype=torch.int64)
    exps = torch.arange(256, dtype=torch.int64) << 23
    signs = torch.tensor([0, 1 << 31], dtype=torch.int64)
    bits = (signs[:, None, None] | exps[None, :, None] | mant[None, None, :]).reshape(-1)
    extra = torch.tensor([0, 1 << 31, 1, 0x807FFFFF, 0x00800000, 0x7F7FFFFF, 0xFF7FFFFF, 0x7F7FFFFE, 0x7F800000,
                          0xFF800000, 0x7FC00000, 0xFFC00001, 0x7F800001, 0x7FBFFFFF], dtype=torch.int64)
    rnd = torch.randint(0, 1 << 32, (4096,), generator=torch.Generator().manual_seed(11), dtype=torch.int64)
    x = _to_f32(torch.cat([bits, extra, rnd]))
    return x[: x.numel() // 32 * 32]  # whole MX blocks


X = bit_classes()
FINITE = X[torch.isfinite(X)][: X.numel() // 2 // 32 * 32]
TINY = _to_f32(torch.randint(0, 1 << 23, (2048,), generator=torch.Generator().manual_seed(12), dtype=torch.int64)
               | torch.randint(0, 2, (2048,), generator=torch.Generator().manual_seed(13), dtype=torch.int64) << 31)
INPUTS = {"classes": X, "shuffled": X[torch.randperm(X.numel(), generator=torch.Generator().manual_seed(14))],
          "finite": FINITE, "subnormal": TINY}


def same_bits(a: torch.Tensor, b: torch.Tensor, what) -> None:
    assert a.dtype == b.dtype and a.shape == b.shape, what
    ia, ib = a.reshape(-1).view(torch.int32 if a.dtype == torch.float32 else torch.int64), \
        b.reshape(-1).view(torch.int32 if b.dtype == torch.float32 else torch.int64)
    bad = (ia != ib).nonzero()
    assert bad.numel() == 0, (f"{what}: {bad.numel()} of {ia.numel()} differ, first at {bad[0].item()}: "
                              f"{ia[bad[0]].item():#x} vs {ib[bad[0]].item():#x}")


eager_only = compiling.eager_only  # the eager reference kernels (the package's compile switch off)


@contextlib.contextmanager
def compiled_once(what):
    """Compiled kernels at every size; exactly one call took a compiled path inside."""
    before = dispatch.compiled_calls
    with compiling.compiled_at_any_size():
        yield
    assert dispatch.compiled_calls == before + 1, f"{what}: the compiled path was not taken"


@pytest.fixture(autouse=True)
def _compiling_on(monkeypatch, one_thread):
    """Compiling switched on; one thread (small tensors: faster so on a shared machine)."""
    monkeypatch.delenv("LOWP_COMPILE", raising=False)
    if not compiling.compile_enabled():
        pytest.skip("compiled kernels are off here (a user TorchFunctionMode/TorchDispatchMode is active)")


def gen():
    return torch.Generator().manual_seed(5)


def test_forcing_is_needed_for_these_sizes():
    """The inputs are below the size threshold: without forcing, lowp.quantize runs the eager kernels."""
    assert max(x.numel() for x in INPUTS.values()) < compiling.FAST_MIN_NUMEL
    before = dispatch.compiled_calls
    lowp.quantize(X, "e4m3", "down")
    lowp.quantize(X.reshape(-1, 32), "mxfp8_e4m3", "zero")
    lowp.quantize(X, "int8", "away")
    assert dispatch.compiled_calls == before


# ---- the general float32 kernel (round_compiled.round_f32), every format, mode and saturate -----------------------

@pytest.mark.parametrize("saturate", [False, True])
@pytest.mark.parametrize("mode", MODES)
def test_general_float_kernel(mode, saturate):
    for name in FLOATS:
        params = get_format(name).kernel_params(torch.float32)
        for rand_bits in ((32, 5) if mode == "stochastic" else (32,)):
            ref = dispatch.round_float_dispatch(X, params, mode, saturate, rand_bits, gen(), None, force="eager")
            before = dispatch.compiled_calls
            got = dispatch.round_float_dispatch(X, params, mode, saturate, rand_bits, gen(), None, force="compiled")
            assert dispatch.compiled_calls == before + 1
            same_bits(got, ref, (name, mode, saturate, rand_bits))


@pytest.mark.parametrize("saturate", [False, True])
def test_general_kernel_float64_input(saturate):
    """Float64 input forced compiled runs the compiled general (int64) kernel, one graph for every mode."""
    rnd = torch.randint(-(1 << 63), (1 << 63) - 1, (4096,), generator=torch.Generator().manual_seed(3),
                        dtype=torch.int64).view(torch.float64)
    x = torch.cat([X.double(), rnd, torch.tensor([5e-324, -5e-324, 1.7976931348623157e308, float("inf")])])
    for mode in MODES:
        for name in ("e4m3", "fp16"):
            params = get_format(name).kernel_params(torch.float64)
            ref = dispatch.round_float_dispatch(x, params, mode, saturate, 32, gen(), None, force="eager")
            before = dispatch.compiled_calls
            got = dispatch.round_float_dispatch(x, params, mode, saturate, 32, gen(), None, force="compiled")
            assert dispatch.compiled_calls == before + 1
            same_bits(got, ref, (name, mode, saturate))


# ---- the fused scaled kernels: Q(x·s)/s (round_compiled.scaled_float_into) and the amax scale --------------------

@pytest.mark.parametrize("saturate", [False, True])
@pytest.mark.parametrize("mode", MODES)
def test_scaled_general_kernel(mode, saturate):
    for name in ("e4m3", "e2m1"):
        fmt = get_format(name)
        params = fmt.kernel_params(torch.float32)
        for inp in ("classes", "finite"):
            x = INPUTS[inp]
            for s in (torch.tensor(2.0**-7), torch.tensor(1.37), current_scale(x, fmt, 1)):
                ref = dispatch.round_float_dispatch(x * s, params, mode, saturate, 32, gen(), None, force="eager") / s
                before = dispatch.compiled_calls
                got = dispatch.scaled_round_float(x, params, mode, saturate, 32, gen(), s.float())
                assert dispatch.compiled_calls == before + 1
                same_bits(got, ref, (name, inp, float(s), mode, saturate))


@pytest.mark.parametrize("inp", list(INPUTS))
def test_compiled_amax_scale(inp):
    x = INPUTS[inp]
    for name in ("e4m3", "e5m2", "e2m1"):
        fmt = get_format(name)
        for margin in (0, 3):
            before = dispatch.compiled_calls
            got = dispatch.current_scale_f32(x, fmt.info.max, margin)
            assert dispatch.compiled_calls == before + 1
            same_bits(got.reshape(1), current_scale(x, fmt, margin).float().reshape(1), (name, inp, margin))


# ---- the format-specialised short paths (round_short_compiled): every variant × rounding × saturate ---------------

def _short_reference(x, fmt, saturate, variant, rounding, rand_bits, s):
    params = fmt.kernel_params(torch.float32)
    if variant == "plain":
        return dispatch.round_float_dispatch(x, params, rounding, saturate, rand_bits, gen(), None, force="eager")
    return dispatch.round_float_dispatch(x * s, params, rounding, saturate, rand_bits, gen(), None,
                                         force="eager") / s


@pytest.mark.parametrize("saturate", [False, True])
@pytest.mark.parametrize("rounding", SHORT_ROUNDINGS)
@pytest.mark.parametrize("variant", round_short_compiled.VARIANTS)
def test_short_path(variant, rounding, saturate):
    """One format (e4m3: fn specials, so saturate changes the result): every format's generated Python is tested
    eagerly against the general kernel in test_round_short_compiled.py; here each variant's compiled graph."""
    fmt = get_format("e4m3")
    rand_bits = 8 if rounding == "stochastic" else 32
    for inp in ("classes", "finite", "subnormal"):
        x = INPUTS[inp]
        scales = {"plain": [None], "scaled": [torch.tensor(2.0**-7), torch.tensor(1.37), torch.tensor(900.0)],
                  "current": [current_scale(x, fmt, 0).float()]}[variant]
        for s in scales:
            ref = _short_reference(x, fmt, saturate, variant, rounding, rand_bits, s)
            sbuf = s.clone() if variant == "scaled" else (torch.empty(()) if variant == "current" else None)
            before = dispatch.compiled_calls
            got = dispatch.short_path(x, fmt, saturate, variant, sbuf, rounding=rounding, rand_bits=rand_bits,
                                      generator=gen())
            assert dispatch.compiled_calls == before + 1
            same_bits(got, ref, (inp, None if s is None else float(s)))
            if variant == "current":
                same_bits(sbuf.reshape(1), s.reshape(1), "the scale handed back")


def test_short_path_is_what_quantize_takes_when_forced():
    """lowp.quantize of a float format, nearest or stochastic, forced: the short path (its kernel is in the cache)."""
    for rounding in SHORT_ROUNDINGS:
        with compiled_once(rounding):
            got = lowp.quantize(X, "e4m3", rounding, saturate=True, generator=gen())
        key = ("short path", get_format("e4m3"), True, "plain", 0, rounding, 32 if rounding == "stochastic" else 0)
        assert compiling.cached(key) is not None
        with eager_only():
            ref = lowp.quantize(X, "e4m3", rounding, saturate=True, generator=gen())
        same_bits(got, ref, rounding)


# ---- MX (round_compiled.mx_scale + mx_round_into): every mode, element formats, scale roundings ------------------

@pytest.mark.parametrize("mode", MODES)
def test_mx(mode):
    """MX saturates its elements by definition (saturate does not apply); the scale exponent is compiled for
    "floor" and eager for the other E8M0 roundings, the element rounding compiled for all."""
    for element, scale_rounding in (("e4m3", "floor"), ("e5m2", "floor"), ("e2m1", "floor"), ("e4m3", "rceil")):
        fmt = MXFormat(get_format(element), scale_rounding=scale_rounding)
        for inp in ("classes", "shuffled", "finite", "subnormal"):
            x = INPUTS[inp].reshape(-1, 32)
            for rand_bits in ((32, 4) if mode == "stochastic" else (32,)):
                with compiled_once((element, scale_rounding, inp, mode)):
                    got = lowp.quantize(x, fmt, mode, rand_bits=rand_bits, generator=gen())
                with eager_only():
                    ref = lowp.quantize(x, fmt, mode, rand_bits=rand_bits, generator=gen())
                same_bits(got, ref, (element, scale_rounding, inp, mode, rand_bits))


# ---- per-tensor int (round_compiled.int_scale + int_round_into): every mode ---------------------------------------

@pytest.mark.parametrize("mode", MODES)
def test_int_per_tensor(mode):
    """Int formats saturate by construction (the scale is amax / qmax); saturate does not apply."""
    for bits in (8, 4, 2):
        fmt = IntFormat(bits)
        for inp in INPUTS:
            x = INPUTS[inp]
            for rand_bits in ((32, 3) if mode == "stochastic" else (32,)):
                with compiled_once((bits, inp, mode)):
                    got = lowp.quantize(x, fmt, mode, rand_bits=rand_bits, generator=gen())
                with eager_only():
                    ref = lowp.quantize(x, fmt, mode, rand_bits=rand_bits, generator=gen())
                same_bits(got, ref, (bits, inp, mode, rand_bits))


# ---- the one switch ----------------------------------------------------------------------------------------------

def test_lowp_compile_0_wins_over_forcing(monkeypatch):
    monkeypatch.setenv("LOWP_COMPILE", "0")
    before = dispatch.compiled_calls
    with compiling.compiled_at_any_size():
        lowp.quantize(X, "e4m3", "down")
        lowp.quantize(X.reshape(-1, 32), "mxfp8_e4m3", "zero")
        lowp.quantize(X, "int8", "away")
        lowp.quantize(X, "e4m3")
    assert dispatch.compiled_calls == before


def test_a_user_dispatch_mode_turns_compiled_kernels_off():
    from torch.utils._python_dispatch import TorchDispatchMode

    class Count(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            return func(*args, **(kwargs or {}))

    before = dispatch.compiled_calls
    with compiling.compiled_at_any_size(), Count():
        assert not compiling.compile_enabled()
        y = lowp.quantize(X, "e4m3", "down")
    assert dispatch.compiled_calls == before
    with eager_only():
        same_bits(y, lowp.quantize(X, "e4m3", "down"), "under a dispatch mode")
