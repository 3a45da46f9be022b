"""Per-tensor / per-channel scaled roles: x_q = Q(x·s)/s with s = (fmt.max / amax) / 2^margin (lowp/scaling.py)."""
import pytest
import torch

import lowp
from lowp.ops import OpContext, observe



@pytest.fixture(autouse=True)
def _eager(monkeypatch):
    monkeypatch.setenv("LOWP_COMPILE", "0")


def ref(x, fmt, amax, margin=0):
    """Scale computed in float32 arithmetic, as the op computes it on float32 tensors."""
    f32 = lambda v: torch.tensor(v, dtype=torch.float32)  # noqa: E731
    s = f32(lowp.get_format(fmt).max) / f32(amax) / f32(2.0**margin)
    return lowp.quantize(x * s, fmt, saturate=True) / s


@pytest.mark.parametrize("margin", [0, 2])
def test_current_scaling(margin):
    torch.manual_seed(0)
    x = torch.randn(64, 16) * 1e-3
    ctx = OpContext(lowp.Recipe(input=lowp.TensorSpec("e4m3", saturate=True, scaling="current", margin=margin)))
    got = ctx.quantize("input", x)
    assert torch.equal(got, ref(x, "e4m3", x.abs().max().item(), margin))
    assert (got != 0).all()  # unscaled e4m3 would flush most of these (min subnormal 2^-9)
    assert (lowp.quantize(x, "e4m3") == 0).float().mean() > 0.5


def test_per_channel_scaling_of_a_weight():
    torch.manual_seed(1)
    w = torch.randn(4, 8) * torch.tensor([1e-4, 1.0, 10.0, 1e3]).unsqueeze(1)
    ctx = OpContext(lowp.Recipe(weight=lowp.TensorSpec("e4m3", saturate=True, scaling="per-channel")))
    got = ctx.quantize("weight", w, chan_axis=0)
    for c in range(4):
        assert torch.equal(got[c], ref(w[c], "e4m3", w[c].abs().max().item()))


def test_delayed_scaling_uses_history():
    ctx = OpContext(lowp.Recipe(input=lowp.TensorSpec("e4m3", saturate=True, scaling="delayed", history=4)))
    big, small = torch.full((8,), 100.0), torch.linspace(-1, 1, 8)
    ctx.quantize("input", big)
    got = ctx.quantize("input", small)  # amax history max is 100 (from the previous call)
    assert torch.equal(got, ref(small, "e4m3", 100.0))


def test_observer_sees_scaled_values_in_format_units():
    torch.manual_seed(2)
    x = torch.randn(32) * 1e-4
    ctx = OpContext(lowp.Recipe(input=lowp.TensorSpec("e4m3", saturate=True, scaling="current")), name="l")
    seen = {}
    with observe.observing(lambda layer, role, a, aq, fmt: seen.update(a=a, aq=aq)):
        ctx.quantize("input", x)
    assert seen["a"].abs().max().item() == pytest.approx(448.0, rel=1e-6)
    assert torch.equal(lowp.quantize(seen["aq"], "e4m3"), seen["aq"])


@pytest.mark.parametrize("scaling,margin,rounding,fmt", [("current", 0, "nearest", "e4m3"),
                                                        ("current", 3, "stochastic", "e5m2"),
                                                        ("delayed", 1, "nearest", "e5m2")])
def test_fused_compiled_scaled_rounding_same_bits(monkeypatch, scaling, margin, rounding, fmt):
    """The compiled path (amax pass + one Q(x·s)/s pass) gives the eager path's bits, NaN/Inf/zero tensors
    included, and is really taken."""
    from lowp.formats import dispatch

    g = torch.Generator().manual_seed(3)
    xs = [torch.randn(33, 17, generator=g) * 1e-3, torch.randn(4096, generator=g) * 1e4, torch.zeros(50),
          torch.tensor([1.0, float("nan"), -2.0]), torch.tensor([1.0, float("inf"), 3e-6])]
    spec = lowp.TensorSpec(fmt, rounding=rounding, saturate=True, scaling=scaling, margin=margin)
    results = {}
    for compiled in ("0", "1"):
        monkeypatch.setenv("LOWP_COMPILE", compiled)
        ctx = OpContext(lowp.Recipe(input=spec))
        torch.manual_seed(7)  # the stochastic key comes from the global generator
        before = dispatch.compiled_calls
        results[compiled] = [ctx.quantize("input", x) for x in xs]
        assert (dispatch.compiled_calls > before) == (compiled == "1")
    for a, b in zip(*results.values()):
        assert torch.equal(a.isnan(), b.isnan())
        assert torch.equal(a[~a.isnan()].view(torch.int32), b[~b.isnan()].view(torch.int32))
