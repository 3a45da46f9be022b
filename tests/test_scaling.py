"""Loss scalers (back-off, skip, growth, floor) and per-tensor amax scales (current, delayed) — lowp.scaling."""
import dataclasses
import math

import pytest
import torch

import lowp
from lowp.recipes.recipe import LossScaling
from lowp.scaling import DelayedScaler, amax_scale, current_scale, make_loss_scaler


def run(scaler, pattern):
    """Feed found_inf flags; return the scale after each update."""
    out = []
    for f in pattern:
        scaler.update(f)
        out.append(scaler.scale)
    return out


def test_dynamic_backoff_skip_and_growth():
    s = make_loss_scaler(LossScaling("dynamic", init_scale=1024.0, growth_interval=3))
    scales = run(s, [False, False, True, False, False, False, False, True, True])
    assert scales == [1024, 1024, 512, 512, 512, 1024, 1024, 512, 256]
    assert s.skipped_steps == 3 and s.steps == 9


def test_static_skips_but_never_changes_and_none_does_nothing():
    s = make_loss_scaler(LossScaling("static", init_scale=8.0))
    assert run(s, [True, False, True]) == [8.0, 8.0, 8.0] and s.skipped_steps == 2
    n = make_loss_scaler(LossScaling("none"))
    assert run(n, [True, False]) == [1.0, 1.0] and n.skipped_steps == 0
    x = torch.ones(2, requires_grad=True)
    assert n.scale_loss(x) is x
    assert make_loss_scaler(None).kind == "none"


def test_enhanced_floor_rises_on_schedule_and_stops_collapse():
    spec = LossScaling("enhanced", init_scale=64.0, growth_interval=10**9, floor=4.0, floor_growth=2.0,
                       floor_interval=5, max_floor=16.0)
    s = make_loss_scaler(spec)
    assert [s.floor_at(t) for t in (0, 4, 5, 9, 10, 15, 100)] == [4, 4, 8, 8, 16, 16, 16]
    scales = run(s, [True] * 12)  # every step overflows: dynamic would collapse to 64·2^-12
    expect = [max(64.0 * 0.5 ** (i + 1), s.floor_at(i + 1)) for i in range(12)]
    assert scales == expect and scales[-1] == 16.0
    assert s.skipped_steps == 12
    d = make_loss_scaler(LossScaling("dynamic", init_scale=64.0))
    assert run(d, [True] * 12)[-1] == 64.0 / 4096
    # the floor also lifts a scale that sits below it when it rises
    e = make_loss_scaler(dataclasses.replace(spec, init_scale=1.0))
    assert run(e, [False] * 11)[-1] == 16.0


def test_unscale_finite_check_and_state_dict():
    s = make_loss_scaler(LossScaling("dynamic", init_scale=2.0**10))
    w = torch.nn.Parameter(torch.ones(3))
    frozen = torch.nn.Parameter(torch.ones(2), requires_grad=False)  # no grad: untouched, never mistaken for one
    w.grad = torch.tensor([1024.0, 2048.0, -512.0])
    assert s.unscale_([w, frozen]) is True
    assert torch.equal(w.grad, torch.tensor([1.0, 2.0, -0.5])) and torch.equal(frozen, torch.ones(2))
    g = torch.tensor([1.0, float("inf")])
    assert s.unscale_([g]) is False
    g = torch.tensor([float("nan"), 1.0])
    assert s.unscale_([g]) is False
    s.update(True)
    d = s.state_dict()
    t = make_loss_scaler(LossScaling("dynamic"))
    t.load_state_dict(d)
    assert (t.scale, t.steps, t.skipped_steps) == (512.0, 1, 1)
    with pytest.raises(ValueError, match="static"):
        make_loss_scaler(LossScaling("static")).load_state_dict(d)


def test_amax_scale_formula_and_edge_cases():
    assert amax_scale(2.0, 448.0) == 224.0
    assert amax_scale(2.0, 448.0, 2) == 56.0
    assert amax_scale(3.0, 448.0, pow2=True) == 128.0  # 149.33 rounded down to a power of two
    assert amax_scale(0.0, 448.0) == 1.0 and amax_scale(math.inf, 448.0) == 1.0 and amax_scale(math.nan, 448.0) == 1.0
    a = torch.tensor([2.0, 0.0, float("inf"), float("nan"), 1e-45])
    s = amax_scale(a, 57344.0, 1)
    assert s.dtype == torch.float32
    assert s[0] == 57344.0 / 4 and torch.equal(s[1:4], torch.ones(3)) and s[4] == 2.0**127
    with pytest.raises(ValueError, match="fmt_max"):
        amax_scale(1.0, 0.0)


def test_current_scale_maps_amax_to_format_max():
    x = torch.tensor([0.5, -3.0, 1.0])
    s = current_scale(x, "e4m3")
    assert s.shape == () and s == 448.0 / 3.0
    q = lowp.quantize(x * s, "e4m3")
    assert q.abs().max() == 448.0  # amax lands exactly on the format max: no overflow
    assert current_scale(torch.zeros(4), "e4m3") == 1.0
    assert current_scale(torch.tensor([1.0, float("nan")]), "e5m2") == 1.0  # NaN stays NaN in Q
    with pytest.raises(ValueError, match="finite max"):
        current_scale(x, "int8")


def test_delayed_scaler_uses_history_before_the_step():
    d = DelayedScaler(history=3, margin=0)
    amaxes = [2.0, 4.0, 1.0, 0.5, 0.5, 0.25, float("inf")]
    got = [float(d.scale(torch.tensor([a, -a / 2]), "e4m3")) for a in amaxes]
    # step 0: own amax (empty history); step t: max of amaxes t-3..t-1 (window 3); Inf is not recorded
    expect_amax = [2.0, 2.0, 4.0, 4.0, 4.0, 1.0, 0.5]
    assert got == [448.0 / a for a in expect_amax]
    assert list(d.amax_history) == [0.5, 0.5, 0.25]
    e = DelayedScaler(3)
    e.load_state_dict(d.state_dict())
    assert e.history_amax() == 0.5
    with pytest.raises(ValueError, match="history"):
        DelayedScaler(0)
