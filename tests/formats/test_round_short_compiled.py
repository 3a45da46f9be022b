"""The format-specialised short paths (``formats/round_short_compiled.py``) against the general rounding kernel, bit
for bit.

Inputs: every rounding-relevant class of float32 bit pattern for the format — each sign × every float32 exponent ×
every kept mantissa pattern (all 2^m, m <= 10) × the dropped-bit patterns that decide nearest-even (0, 1,
half - 1, half, half + 1, all ones) — plus ±0, ±Inf, NaNs with payloads, float32 subnormals and 2^16 random bit
patterns. The general kernel (``round_reference.round_float``, itself tested against ml_dtypes and exact references)
is the oracle. The short paths' Python runs eagerly for every format; the compiled graphs are checked on a subset
of formats (compiling one costs seconds) and must agree with their eager twin.
"""
from __future__ import annotations

import pytest
import torch

from lowp.formats import get_format
from lowp.formats import round_short_compiled
from lowp.formats.float import FloatFormat
from lowp.formats.round_reference import MODE_CODE, round_float
from lowp.formats.registry import FORMATS

FLOATS = sorted(n for n, f in FORMATS.items()
                if isinstance(f, FloatFormat) and round_short_compiled.supported(f, "nearest"))


def patterns(fmt: FloatFormat) -> torch.Tensor:
    sh = 23 - fmt.man
    kept = torch.arange(1 << min(fmt.man, 10), dtype=torch.int64) << sh
    if fmt.man > 10:  # high mantissa bits exhaustive, the low kept bits sampled (0, 1, all ones)
        low = torch.tensor([0, 1, (1 << (fmt.man - 10)) - 1], dtype=torch.int64) << sh
        kept = (kept[:, None] << (fmt.man - 10) | low[None, :]).reshape(-1)
    half = 1 << (sh - 1)
    drop = torch.tensor(sorted({0, 1, half - 1, half, half + 1, (1 << sh) - 1} - {-1}), dtype=torch.int64)
    drop = drop[(drop >= 0) & (drop < (1 << sh))]
    exps = torch.arange(256, dtype=torch.int64) << 23
    signs = torch.tensor([0, 1 << 31], dtype=torch.int64)
    bits = (signs[:, None, None, None] | exps[None, :, None, None] | kept[None, None, :, None]
            | drop[None, None, None, :]).reshape(-1)
    extra = torch.tensor([0, 1 << 31, 0x7F800000, 0xFF800000, 0x7FC00000, 0xFFC00001, 0x7F800001, 1, 0x807FFFFF,
                          0x00400000], dtype=torch.int64)
    rnd = torch.randint(0, 1 << 32, (1 << 16,), generator=torch.Generator().manual_seed(0), dtype=torch.int64)
    bits = torch.cat([bits, extra, rnd])
    return (bits - ((bits >> 31) << 32)).to(torch.int32).view(torch.float32)


def reference(fmt: FloatFormat, x: torch.Tensor, saturate: bool, key=None, k: int = 32) -> torch.Tensor:
    p = fmt.kernel_params(torch.float32)
    if key is None:
        return round_float(x, **p, mode=torch.tensor(MODE_CODE["nearest"]), saturate=torch.tensor(saturate))
    return round_float(x, **p, mode=torch.tensor(MODE_CODE["stochastic"]), saturate=torch.tensor(saturate),
                       rand_k=torch.tensor(k), key=key)


def same_bits(a: torch.Tensor, b: torch.Tensor) -> None:
    ia, ib = a.view(torch.int32), b.view(torch.int32)
    bad = (ia != ib).nonzero()
    assert bad.numel() == 0, f"{bad.numel()} mismatches, first at {bad[0].item()}: {ia[bad[0]].item():#x} vs " \
                             f"{ib[bad[0]].item():#x}"


def run(fmt, saturate, variant, x, *extra, compiled=False, margin=0, key=None, k=32):
    out = torch.empty_like(x)
    if variant == "current":
        extra = (torch.empty(()),)
    if key is not None:
        extra = extra + (key,)
    round_short_compiled.kernel(fmt, saturate, variant, margin=margin, compiled=compiled,
                                rounding="nearest" if key is None else "stochastic", rand_bits=k)(out, x, *extra)
    return out


def test_the_formats_covered_include_the_common_ones():
    assert {"bf16", "fp16", "e4m3", "e5m2", "e2m1", "e3m2", "e2m3", "e4m3fnuz", "tf32"} <= set(FLOATS)
    assert round_short_compiled.supported(get_format("e4m3"), "stochastic")
    assert not round_short_compiled.supported(get_format("e4m3"), "down")
    assert not round_short_compiled.supported(get_format("fp32"), "nearest")


@pytest.mark.parametrize("saturate", [False, True])
@pytest.mark.parametrize("name", FLOATS)
def test_plain_short_path_equals_general_kernel(name, saturate):
    fmt = get_format(name)
    x = patterns(fmt)
    same_bits(run(fmt, saturate, "plain", x), reference(fmt, x, saturate))


@pytest.mark.parametrize("k", [1, 5, 8, 24, 25, 32])
@pytest.mark.parametrize("name", FLOATS)
def test_stochastic_short_path_equals_general_kernel(name, k):
    """Same random bits (the hash of the element index under the key) and the same decision, carry into the
    exponent and the target's subnormal range included."""
    fmt = get_format(name)
    x = patterns(fmt)
    key = torch.tensor([123456789, 987654321], dtype=torch.int64)
    same_bits(run(fmt, False, "plain", x, key=key, k=k), reference(fmt, x, False, key, k))
    same_bits(run(fmt, True, "plain", x, key=key, k=k), reference(fmt, x, True, key, k))


@pytest.mark.parametrize("name", ["e4m3", "e5m2", "e2m1", "e4m3fnuz"])
def test_scaled_and_current_short_paths_equal_the_three_step_reference(name):
    fmt = get_format(name)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(4096, generator=gen) * 3.0
    x[::97] = torch.tensor(float("nan"))
    x[5] = 0.0
    for s in (torch.tensor(2.0**-7), torch.tensor(1.37), torch.tensor(900.0)):
        same_bits(run(fmt, True, "scaled", x, s), reference(fmt, x * s, True) / s)
    from lowp.scaling import current_scale

    y = x.nan_to_num(0.0)  # current scaling of a NaN-free tensor (a NaN makes amax NaN, s = 1)
    for margin in (0, 2):
        s = current_scale(y, fmt, margin).to(torch.float32)
        same_bits(run(fmt, True, "current", y, margin=margin), reference(fmt, y * s, True) / s)
        sbuf = torch.empty(())
        round_short_compiled.kernel(fmt, True, "current", margin=margin, compiled=False)(torch.empty_like(y), y, sbuf)
        assert sbuf.item() == s.item()  # the scale is handed back
    same_bits(run(fmt, True, "current", x), reference(fmt, x, True))  # NaN amax: s = 1
    z = torch.zeros(64)
    same_bits(run(fmt, True, "current", z), z)


NO_SUBNORMALS = FloatFormat(exp=4, man=3, special="ieee", subnormals=False, name="e4m3-nosub")


@pytest.mark.parametrize("saturate", [False, True])
def test_short_path_of_a_format_without_subnormals_equals_general_kernel(saturate):
    x = patterns(NO_SUBNORMALS)
    same_bits(run(NO_SUBNORMALS, saturate, "plain", x), reference(NO_SUBNORMALS, x, saturate))


# the compiled C++ runs under inductor's -fno-signed-zeros: the signs of zeros, NaNs and overflows are checked there
@pytest.mark.parametrize("name,saturate", [("e4m3", True), ("e4m3", False), ("e5m2", False), ("bf16", False),
                                           ("e4m3fnuz", False), ("e2m1", False), ("e4m3-nosub", False)])
def test_compiled_short_path_equals_its_eager_twin(name, saturate):
    fmt = NO_SUBNORMALS if name == "e4m3-nosub" else get_format(name)
    x = patterns(fmt)
    same_bits(run(fmt, saturate, "plain", x, compiled=True), reference(fmt, x, saturate))


@pytest.mark.parametrize("name,k", [("e5m2", 32), ("bf16", 8)])
def test_compiled_stochastic_short_path_equals_the_reference(name, k):
    fmt = get_format(name)
    x = patterns(fmt)
    key = torch.tensor([5, 77], dtype=torch.int64)
    same_bits(run(fmt, False, "plain", x, compiled=True, key=key, k=k), reference(fmt, x, False, key, k))


def test_compiled_fused_current_scaling_equals_eager():
    fmt = get_format("e4m3")
    x = torch.randn(1 << 17, generator=torch.Generator().manual_seed(2)) * 50
    same_bits(run(fmt, True, "current", x, compiled=True), run(fmt, True, "current", x))


def test_unknown_variant_is_an_error():
    with pytest.raises(ValueError, match="variant 'bogus'"):
        round_short_compiled.source(get_format("e4m3"), False, "bogus")
