"""AdaComp unit tests (no processes): nothing lost, >= 1 entry per non-empty bin, the selection rule, adaptivity,
message size; hook-name parsing; the low-precision all-reduce codec."""
from fractions import Fraction
import math

import pytest
import torch

from lowp.distributed import AdaCompCompressor, adacomp_compress, message_bytes, parse_hook
from lowp.distributed.adacomp import bin_length_for
from lowp.distributed.lowp_allreduce import LowpAllreduceCodec
from lowp.formats import get_format
from lowp.scaling import current_scale


def _fr(t):
    return [Fraction(float(v)) for v in t.reshape(-1).tolist()]


def test_nothing_lost_exactly_over_steps():
    gen = torch.Generator().manual_seed(0)
    res = None
    for step in range(6):
        # wide dynamic range: some bins ~1e-12, some ~1e3, exact zeros
        g = torch.randn(1000, generator=gen) * torch.logspace(-12, 3, 1000)[torch.randperm(1000, generator=gen)]
        g[::7] = 0
        st = adacomp_compress(g, res, 50)
        for s, r, G in zip(_fr(st.sent), _fr(st.residue), _fr(st.accumulated)):
            assert s + r == G
        assert torch.equal(st.accumulated, (res if res is not None else 0) + g.double())
        res = st.residue


def test_sent_is_sign_times_one_float32_scale():
    g = torch.randn(3000, generator=torch.Generator().manual_seed(1))
    st = adacomp_compress(g, None, 500)
    sel = st.sent[st.mask]
    assert st.selected > 0 and torch.all(sel.abs() == st.scale)
    assert torch.equal(torch.sign(sel), torch.sign(st.accumulated[st.mask]).float())
    assert st.scale == float(torch.tensor(float(st.accumulated[st.mask].abs().mean()), dtype=torch.float32))
    assert torch.all(st.sent[~st.mask] == 0)


def _reference_mask(G, H, L):
    n = len(G)
    m = [False] * n
    for b in range(0, n, L):
        idx = range(b, min(b + L, n))
        gmax = max(abs(G[i]) for i in idx)
        if gmax == 0:
            continue
        top = max(idx, key=lambda i: (abs(G[i]), -i))
        for i in idx:
            m[i] = (G[i] != 0 and abs(H[i]) >= gmax) or i == top
    return m


def test_selection_rule_against_loop_reference():
    gen = torch.Generator().manual_seed(2)
    res = torch.randn(230, generator=gen, dtype=torch.float64)
    g = torch.randn(230, generator=gen) * 0.5
    st = adacomp_compress(g, res, 23)
    G = (res + g.double()).tolist()
    H = [a + float(b) for a, b in zip(G, g.tolist())]
    assert st.mask.tolist() == _reference_mask(G, H, 23)


def test_every_nonempty_bin_sends_and_empty_bins_do_not():
    # the residue dominates and g points against it: |G + g| < max |G| for every entry of bin 0
    res = torch.tensor([1.0, 0.9, 0.8, 0.7, 0.0, 0.0, 0.0, 0.0], dtype=torch.float64)
    g = torch.tensor([-0.4, -0.4, -0.4, -0.4, 0.0, 0.0, 0.0, 0.0])
    st = adacomp_compress(g, res, 4)
    assert st.mask.tolist() == [True, False, False, False, False, False, False, False]
    assert st.forced == 1 and st.nonempty_bins == 1
    gen = torch.Generator().manual_seed(3)
    r = None
    for _ in range(5):
        g = torch.randn(5000, generator=gen)
        g[1000:1500] = 0  # a bin range that stays empty (no residue there either)
        st = adacomp_compress(g, r, 50)
        r = st.residue
        per_bin = st.mask.view(-1, 50).sum(1)
        nonempty = (st.accumulated.view(-1, 50) != 0).any(1)
        assert torch.all(per_bin[nonempty] >= 1)
        assert torch.all(per_bin[~nonempty] == 0)
        assert not st.mask[1000:1500].any()


def test_selection_rate_adapts_to_gradient_scale():
    gen = torch.Generator().manual_seed(4)
    L = 50
    r = None
    for _ in range(30):  # build up a residue from small gradients
        r = adacomp_compress(torch.randn(10000, generator=gen) * 1e-3, r, L).residue
    quiet = adacomp_compress(torch.randn(10000, generator=gen) * 1e-6, r, L)   # residue-dominated
    loud = adacomp_compress(torch.randn(10000, generator=gen) * 1.0, r, L)     # fresh gradient dominates
    assert quiet.rate <= 2.0 / L
    assert loud.rate > 5 * quiet.rate
    # a fresh layer (no residue): H = 2g selects |g| >= max|g| / 2, many per bin
    fresh = adacomp_compress(torch.randn(10000, generator=gen), None, L)
    assert fresh.rate > 3.0 / L


def test_message_bytes_and_ratio():
    assert message_bytes(1024, 0) == 4
    assert message_bytes(1024, 10) == math.ceil((10 * 11 + 32) / 8)
    comp = AdaCompCompressor(conv_bin=50, fc_bin=500)
    g = torch.randn(64, 256)
    comp.compress(0, g)
    s = comp.summary()[0]
    assert s["bin"] == 500 and s["numel"] == 64 * 256
    k = comp.layer_stats[0]["selected"]
    assert comp.bytes == message_bytes(64 * 256, k) and comp.dense_bytes == 4 * 64 * 256
    assert bin_length_for((32, 1, 5)) == 50 and bin_length_for((10, 160)) == 500 and bin_length_for((32,)) == 50


def test_parse_hook():
    assert parse_hook("none").kind == "none"
    a = parse_hook("adacomp:20:300")
    assert (a.kind, a.conv_bin, a.fc_bin, a.name) == ("adacomp", 20, 300, "adacomp:20:300")
    s = parse_hook("allreduce:E4M3:stochastic:ef")
    assert (s.fmt, s.rounding, s.error_feedback, s.name) == ("e4m3", "stochastic", True, "allreduce:e4m3:stochastic:ef")
    e = parse_hook("allreduce:e4m3:ef:emulated")
    assert (e.fmt, e.error_feedback, e.wire, e.name) == ("e4m3", True, False, "allreduce:e4m3:ef:emulated")
    a = parse_hook("adacomp:20:300:emulated")
    assert (a.conv_bin, a.fc_bin, a.wire, a.name) == (20, 300, False, "adacomp:20:300:emulated")
    assert parse_hook("adacomp").wire and parse_hook("allreduce:int8:emulated").fmt == "int8"
    with pytest.raises(ValueError, match="sends float formats.*int8.*:emulated"):
        parse_hook("allreduce:int8")
    for bad in ["", "zip", "allreduce", "allreduce:nope", "allreduce:e5m2:up", "adacomp:x", "none:1", "adacomp:0",
                "none:emulated", "allreduce:emulated", "adacomp:emulated:10"]:
        with pytest.raises(ValueError, match="valid"):
            parse_hook(bad)


def test_codec_e4m3_on_grid_with_scale_and_bytes():
    codec = LowpAllreduceCodec("e4m3", "nearest")
    g = torch.randn(1000, generator=torch.Generator().manual_seed(5)) * 1e-5  # far below e4m3's normal range
    q = codec.encode(0, g, 0)
    s = current_scale(g, "e4m3")  # 448 / amax
    assert float(s) == pytest.approx(448.0 / float(g.abs().max()), rel=1e-6)
    assert torch.equal(q, get_format("e4m3").quantize(g * s, saturate=True) / s)
    assert torch.allclose(q, g, rtol=2**-4, atol=0)  # 3 mantissa bits: relative error <= 2^-4 (normal range)
    assert codec.bytes == 1000 + 4 and codec.dense_bytes == 4000
    bf = LowpAllreduceCodec("bf16")
    assert not bf.scaled
    assert torch.equal(bf.encode(0, g, 0), g.bfloat16().float())
    assert bf.bytes == 2000


def test_codec_stochastic_is_unbiased_and_error_feedback_loses_nothing():
    x = torch.full((20000,), 1.0 + 1 / 16)  # between two e5m2 neighbours (1 and 1.25): P(up) = 1/4
    c = LowpAllreduceCodec("e5m2", "stochastic", scaled=False, seed=7)
    q = c.encode(0, x, 0)
    assert set(q.unique().tolist()) == {1.0, 1.25}
    assert abs(float(q.mean()) - (1 + 1 / 16)) < 0.01
    ef = LowpAllreduceCodec("e5m2", "nearest", error_feedback=True)
    gen = torch.Generator().manual_seed(8)
    total_g = torch.zeros(500, dtype=torch.float64)
    total_q = torch.zeros(500, dtype=torch.float64)
    total_plain = torch.zeros(500, dtype=torch.float64)
    plain = LowpAllreduceCodec("e5m2", "nearest")
    for step in range(50):
        g = torch.randn(500, generator=gen)
        total_g += g.double()
        total_q += ef.encode(0, g, step).double()
        total_plain += plain.encode(0, g, step).double()
    # sum of messages + the error still held = sum of gradients (up to float32 rounding of x = g + e)
    assert torch.allclose(total_q + ef.errors[0].double(), total_g, atol=1e-5)
    # without feedback the rounding errors accumulate (a random walk); with it the drift stays one rounding error
    assert (total_q - total_g).abs().mean() < 0.5 * (total_plain - total_g).abs().mean()
