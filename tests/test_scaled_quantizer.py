"""The one scaled quantizer (``lowp/scaled_quantizer.py``): every fast path gives the bits of the eager three steps
s = scale(x), Q(x·s), /s, written out here with the eager reference kernels (LOWP_COMPILE=0)."""
from __future__ import annotations

import zlib

import pytest
import torch

import lowp
from lowp import scaling
from lowp.formats import compiling, dispatch
from lowp.scaled_quantizer import ScaledQuantizer
from lowp.scaling import channel_amax


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and torch.equal(a.view(torch.int32), b.view(torch.int32))


def data(n: int = 1 << 15, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, generator=g) * torch.exp2(torch.randint(-12, 12, (n,), generator=g).float())
    x[7] = 0.0
    x[11] = -0.0
    return x.reshape(-1, 64)


def eager_reference(monkeypatch, x, fmt, rounding, scale):
    monkeypatch.setenv("LOWP_COMPILE", "0")
    try:
        f = lowp.get_format(fmt)
        if scale is None:
            return f.quantize(x, rounding, saturate=True)
        s = scale.to(x.dtype)
        return f.quantize(x * s, rounding, saturate=True) / s
    finally:
        monkeypatch.delenv("LOWP_COMPILE")


@pytest.mark.parametrize("fmt", ["e4m3", "e5m2", "e2m1", "bf16", "fp16"])
@pytest.mark.parametrize("scaling_kind", ["none", "current", "per-channel"])
@pytest.mark.parametrize("rounding", ["nearest", "down"])
def test_fast_paths_equal_the_eager_three_steps(monkeypatch, fmt, scaling_kind, rounding):
    x = data(seed=zlib.crc32(f"{fmt}/{scaling_kind}/{rounding}".encode()) % 1000)
    q = ScaledQuantizer(fmt, rounding, saturate=True, scaling=scaling_kind, margin=1)
    before = dispatch.compiled_calls
    got = q(x, chan_axis=0)
    assert dispatch.compiled_calls > before or fmt in ("bf16", "fp16")  # a compiled path ran (bf16/fp16: maybe native)
    if scaling_kind == "none":
        s = None
    elif scaling_kind == "current":
        s = scaling.current_scale(x, fmt, 1)
    else:
        s = scaling.amax_scale(channel_amax(x, 0), lowp.get_format(fmt).max, 1)
    assert same_bits(got, eager_reference(monkeypatch, x, fmt, rounding, s))


def test_delayed_scaling_uses_the_history_and_records_after_use(monkeypatch):
    q = ScaledQuantizer("e4m3", saturate=True, scaling="delayed", history=2)
    big, small = data(seed=1) * 100, data(seed=2)
    q(big)  # first call: its own amax
    got = q(small)  # scaled by big's amax from the history
    s = scaling.amax_scale(scaling.tensor_amax(big), 448.0)
    assert same_bits(got, eager_reference(monkeypatch, small, "e4m3", "nearest", s))
    assert list(q.delayed.amax_history) == [scaling.tensor_amax(big).item(), scaling.tensor_amax(small).item()]


def test_generator_and_observer_take_the_general_path_with_the_same_bits(monkeypatch):
    x = data(seed=3)
    seen = []
    q = ScaledQuantizer("e4m3", saturate=True, scaling="current")
    a = q(x, observe=lambda xs, qq: seen.append((xs, qq)))
    assert same_bits(a, q(x))
    (xs, qq), = seen
    s = scaling.current_scale(x, "e4m3")
    assert same_bits(xs, x * s) and same_bits(qq, lowp.quantize(x * s, "e4m3", saturate=True))
    sto = ScaledQuantizer("e5m2", "stochastic", scaling="current")
    r1 = sto(x, generator=torch.Generator().manual_seed(5))
    r2 = sto(x, generator=torch.Generator().manual_seed(5))
    assert same_bits(r1, r2)
    s = scaling.current_scale(x, "e5m2")
    ref = lowp.quantize(x * s, "e5m2", "stochastic", generator=torch.Generator().manual_seed(5)) / s
    assert same_bits(r1, ref)


def test_nan_stays_nan_and_a_zero_tensor_stays_zero():
    q = ScaledQuantizer("e4m3", saturate=True, scaling="current")
    x = data(seed=4)
    x[0, 0] = float("nan")
    y = q(x)
    assert torch.isnan(y[0, 0]) and not torch.isnan(y.flatten()[1:]).any()
    z = torch.zeros(4, 64)
    assert same_bits(q(z), z)


def test_bad_settings_are_errors_that_name_the_value():
    with pytest.raises(ValueError, match="'sideways'"):
        ScaledQuantizer("e4m3", scaling="sideways")
    with pytest.raises(ValueError, match="finite max"):
        ScaledQuantizer("mxfp8_e4m3", scaling="current")


def test_parameters_of_many_shapes_share_one_graph():
    """The hot path hands the compiled kernel a flat view of each tensor; views of tensors that require grad (the
    weights) of more shapes and ranks than dynamo's recompile limit must not recompile (nor fail)."""
    import torch._dynamo

    q = ScaledQuantizer("e4m3", saturate=True, scaling="current")
    q(torch.randn(64))
    graphs = compiling.graphs_compiled()
    n = torch._dynamo.config.recompile_limit + 4
    for i in range(n):
        shape = [(i % 3) + 2] * ((i % 4) + 1) + [i + 3]
        w = torch.nn.Parameter(torch.randn(shape))
        y = q(w)
        s = scaling.current_scale(w.detach(), "e4m3")
        assert same_bits(y, lowp.quantize(w.detach() * s, "e4m3", saturate=True) / s)
    assert compiling.graphs_compiled() == graphs


def test_grad_mode_does_not_recompile_the_kernels():
    """lowp.quantize runs with grad enabled, the emulated ops under no_grad: one graph serves both."""

    x = data(1 << 16, seed=9)
    lowp.quantize(x, "e5m2", saturate=True)  # warm, grad mode on
    graphs = compiling.graphs_compiled()
    with torch.no_grad():
        lowp.quantize(x, "e5m2", saturate=True)
    ScaledQuantizer("e5m2", saturate=True)(x)
    assert compiling.graphs_compiled() == graphs


@pytest.mark.parametrize("ka,kb", [(dict(fmt="e4m3", scaling="current"), dict(fmt="e5m2", scaling="current")),
                                   (dict(fmt="e4m3", scaling="current"), dict(fmt="e4m3", scaling="current")),
                                   (dict(fmt="e2m1", scaling="none"),
                                    dict(fmt="e5m2", rounding="stochastic", rand_bits=8, scaling="current"))])
def test_a_pair_in_one_compiled_call_has_the_bits_of_two_calls(ka, kb):
    """quantize_pair: one compiled call (one graph, two outputs) with the bits of qa(a) then qb(b), stochastic
    keys drawn in that order, for equal and different sizes."""
    from lowp.scaled_quantizer import quantize_pair

    qa = ScaledQuantizer(ka.pop("fmt"), saturate=True, **ka)
    qb = ScaledQuantizer(kb.pop("fmt"), saturate=True, **kb)
    for a, b in ((data(1 << 12, 1), data(1 << 10, 2)), (data(1 << 11, 3), data(1 << 11, 4)),
                 (torch.zeros(5), torch.tensor([1.0, float("nan"), -3.0]))):
        torch.manual_seed(5)
        before = dispatch.compiled_calls
        pa, pb = quantize_pair(qa, a, qb, b)
        assert dispatch.compiled_calls == before + 1
        torch.manual_seed(5)
        ra, rb = qa(a), qb(b)
        assert same_bits(pa, ra) and same_bits(pb, rb)


def test_a_pair_falls_back_where_a_short_path_does_not_apply(monkeypatch):
    from lowp.scaled_quantizer import quantize_pair

    q = ScaledQuantizer("e4m3", saturate=True, scaling="current")
    x = data(1 << 10)
    assert quantize_pair(q, x, ScaledQuantizer("e4m3", scaling="per-channel"), x) is None
    assert quantize_pair(q, x, q, x.double()) is None
    assert quantize_pair(q, x, q, torch.ones(1)) is None  # size 1 would compile a graph of its own
    monkeypatch.setenv("LOWP_COMPILE", "0")
    assert quantize_pair(q, x, q, x) is None
