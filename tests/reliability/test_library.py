"""Library numerics probes (reliability probes), parametrised over every registered format and each format family:
an Inf or out-of-float32-range amax saturates scaled formats and never turns a finite neighbour into NaN; NaN stays
NaN; requires_grad and meta tensors behave alike in every family; a wrong-type generator or a string boolean is one
clear error."""
from __future__ import annotations

import math

import pytest
import torch

import lowp
from lowp.formats import get_format

ALL = lowp.format_names() + ["ternary-g4", "ternary-g4-thr", "dfp8-b4", "int<6>", "fixed<4,4>"]
# one representative per family (float, int, fixed, dfp, MX, E8M0, ternary)
FAMILIES = ["e4m3", "bf16", "int8", "fixed<4,4>", "dfp8", "mxfp8_e4m3", "mxint8", "e8m0", "ternary-g4"]
POSITIVE_ONLY = {"e8m0"}  # E8M0 has no sign: x <= 0 gives NaN (as ml_dtypes)


def _names(names):
    out = []
    for n in names:
        try:
            get_format(n)
            out.append(n)
        except ValueError:
            pass
    return out


@pytest.mark.parametrize("name", _names(ALL))
@pytest.mark.parametrize("big", [float("inf"), float("-inf"), 1e39])
@pytest.mark.parametrize("saturate", [False, True])
def test_huge_or_inf_element_keeps_neighbours_finite(name, big, saturate):
    x = torch.tensor([big, 3.0, 1.0, 0.5, 2.0, 0.25, 1.5, 0.75], dtype=torch.float64)
    if name in POSITIVE_ONLY and big < 0:
        x[0] = -x[0]
    y = lowp.quantize(x, name, saturate=saturate)
    assert torch.isfinite(y[1:]).all(), (name, y)
    # the huge element itself: saturating, or a format with a scale, gives a number (a plain float format without
    # saturation overflows as documented: Inf, or NaN for formats without Inf)
    kind = get_format(name).__class__.__name__
    if saturate and name not in POSITIVE_ONLY or kind not in ("FloatFormat", "E8M0Format"):
        assert not math.isnan(float(y[0])), (name, y)
    if get_format(name).__class__.__name__ in ("IntFormat", "TernaryFormat") and math.isinf(big):
        # the documented saturation: ±Inf -> ±(largest magnitude of the grid), here the largest output
        assert float(y[0]) == math.copysign(float(y.abs().max()), big)


def test_int8_float64_beyond_float32_range():
    y = lowp.quantize(torch.tensor([1e39, 3.0, -1.0], dtype=torch.float64), "int8")
    s = torch.finfo(torch.float32).max / 127  # the largest float32 scale, as float32
    assert torch.isfinite(y).all() and float(y[0]) == pytest.approx(127 * float(torch.tensor(s).float()), rel=1e-6)
    assert y[1] == 0 and y[2] == 0


def test_ternary_with_inf_saturates_to_alpha():
    y = lowp.quantize(torch.tensor([1.0, 2.0, float("inf"), -1.0]), "ternary-g4")
    # the finite values alone: optimal ternary of [1, 2, -1] keeps all three, alpha = 4/3; Inf -> +alpha
    a = 4.0 / 3.0
    assert torch.allclose(y, torch.tensor([a, a, a, -a]))
    assert torch.equal(lowp.quantize(torch.tensor([float("-inf")] * 4), "ternary-g4"),
                       torch.tensor([float("-inf")] * 4))


@pytest.mark.parametrize("name", _names(ALL))
def test_nan_stays_nan(name):
    x = torch.tensor([float("nan"), 1.0, 2.0, 0.5])
    assert torch.isnan(lowp.quantize(x, name)[0])


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_requires_grad_same_in_every_family(name, dtype):
    x = torch.rand(4, 32, dtype=dtype, requires_grad=True) + 0.1
    y = lowp.quantize(x, name)
    assert not y.requires_grad and y.grad_fn is None
    assert torch.equal(y, lowp.quantize(x.detach(), name))
    # the straight-through variant keeps the graph in every family
    g, = torch.autograd.grad(lowp.quantize_ste(x, name).sum(), x)
    assert torch.equal(g, torch.ones_like(x))


@pytest.mark.parametrize("name", FAMILIES)
def test_meta_same_in_every_family(name):
    x = torch.empty(4, 32, device="meta")
    y = lowp.quantize(x, name)
    assert y.device.type == "meta" and y.shape == x.shape and y.dtype == x.dtype


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("gen", [5, "seed", torch.tensor(3), object()])
def test_wrong_generator_one_clear_error(name, gen):
    rounding = "nearest" if name.startswith("ternary") else "stochastic"
    with pytest.raises(TypeError, match=r"^generator must be a torch.Generator or None, got ") as e:
        lowp.quantize(torch.rand(8), name, rounding, generator=gen)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("sat", ["false", "no", 0, 1, None])
def test_string_or_int_saturate_refused(name, sat):
    with pytest.raises(TypeError, match="saturate must be True or False"):
        lowp.quantize(torch.rand(8), name, saturate=sat)
    with pytest.raises(TypeError, match="saturate must be True or False"):
        lowp.quantize_ste(torch.rand(8), name, saturate=sat)
