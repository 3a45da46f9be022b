"""Stochastic rounding (lowp/rounding.py): results are neighbours, unbiased within a stated number of standard errors,
reproducible from a seed whatever the thread count; the counter-based random bits are uniform."""
import math

import numpy as np
import pytest
import torch

import lowp
from lowp.rounding import (ROUNDING_MODES, MASK32, check_rand_bits, check_rounding, draw_key, hash_bits, hash_bits32,
                           random_bits)

N_SE = 5.0  # tolerance: |mean - expected| < 5 standard errors (two-sided p ~ 6e-7 per check, fixed seeds)

SR_FORMATS = ["bf16", "fp16", "e5m2", "e4m3", "e2m1", "fp16-169", "tf32", "int8", "fixed<4,6>", "dfp8", "mxfp8_e4m3",
              "mxint8"]


def in_range_tensor(n, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, generator=g) * torch.exp2(torch.randint(-4, 4, (n,), generator=g).float())


@pytest.mark.parametrize("name", SR_FORMATS)
def test_stochastic_gives_a_neighbour(name):
    x = in_range_tensor(4096, 1)
    if name.startswith("fixed"):
        x = x.clamp(-7.9, 7.9)
    g = torch.Generator().manual_seed(7)
    y = lowp.quantize(x, name, "stochastic", generator=g)
    lo, hi = lowp.quantize(x, name, "down"), lowp.quantize(x, name, "up")
    assert bool(((y == lo) | (y == hi)).all())
    # both neighbours occur, and exact values never move
    assert bool((y == lo).any() and (y == hi).any() and (lo != hi).any())
    exact = lowp.quantize(x, name, "nearest")
    if name not in ("int8", "dfp8", "mxfp8_e4m3", "mxint8"):  # scale depends on the data only: exact stays exact
        assert torch.equal(lowp.quantize(exact, name, "stochastic"), exact)


@pytest.mark.parametrize("name,value", [("e5m2", 1.0 + 0.3 * 0.25), ("bf16", -3.0 * (1 + 0.7 * 2**-7)),
                                        ("e4m3", 0.011), ("fp16-169", 1.0 + 0.1 * 2**-9), ("fixed<2,6>", 0.3),
                                        ("e2m1", 2.6), ("fp16", 1e-6)])
@pytest.mark.parametrize("rand_bits", [None, 3, 8])
def test_stochastic_unbiased_or_exactly_k_bit_biased(name, value, rand_bits):
    n = 40000
    x = torch.full((n,), value, dtype=torch.float32)
    xv = float(x[0])
    lo = float(lowp.quantize(x[:1], name, "down"))
    hi = float(lowp.quantize(x[:1], name, "up"))
    frac = (xv - lo) / (hi - lo)
    if rand_bits is None:
        p = frac
    else:  # k-bit hardware truncates the magnitude's fraction to k bits: P(magnitude up) = floor(f * 2^k) / 2^k
        f_mag = frac if xv > 0 else 1 - frac
        p_mag = math.floor(f_mag * 2**rand_bits) / 2**rand_bits
        p = p_mag if xv > 0 else 1 - p_mag
    y = lowp.quantize(x, name, "stochastic", rand_bits=rand_bits, generator=torch.Generator().manual_seed(3))
    ups = float((y == hi).double().mean())
    assert bool(((y == lo) | (y == hi)).all())
    se = math.sqrt(max(p * (1 - p), 1e-12) / n)
    assert abs(ups - p) < N_SE * se + 1e-12, (ups, p, se)
    if rand_bits is None:  # unbiased: E[y] = x
        mean = float(y.double().mean())
        assert abs(mean - xv) < N_SE * se * (hi - lo) + 1e-300


def test_stochastic_reproducible_and_seed_dependent():
    x = in_range_tensor(10000, 2)
    for name in ("e5m2", "int8", "mxfp8_e5m2"):
        a = lowp.quantize(x, name, "stochastic", generator=torch.Generator().manual_seed(5))
        b = lowp.quantize(x, name, "stochastic", generator=torch.Generator().manual_seed(5))
        c = lowp.quantize(x, name, "stochastic", generator=torch.Generator().manual_seed(6))
        assert torch.equal(a.view(torch.int32), b.view(torch.int32)), name
        assert not torch.equal(a, c), name
    # the global generator is used when none is given: torch.manual_seed makes it reproducible
    torch.manual_seed(11)
    a = lowp.quantize(x, "e4m3", "stochastic")
    torch.manual_seed(11)
    assert torch.equal(a, lowp.quantize(x, "e4m3", "stochastic"))


def test_stochastic_independent_of_thread_count():
    x = in_range_tensor(50000, 4)
    old = torch.get_num_threads()
    try:
        res = []
        for t in (1, 2):
            torch.set_num_threads(t)
            res.append([lowp.quantize(x, n, "stochastic", rand_bits=8, generator=torch.Generator().manual_seed(9))
                        for n in ("e5m2", "int8", "bf16")])
    finally:
        torch.set_num_threads(old)
    for a, b in zip(*res):
        assert torch.equal(a.view(torch.int32), b.view(torch.int32))


def test_stochastic_depends_on_position_only():
    """The random word of element i depends on (key, i): a prefix of a tensor rounds like the whole tensor's
    prefix, whatever the shape."""
    x = in_range_tensor(3000, 5)
    full = lowp.quantize(x.reshape(30, 100), "e5m2", "stochastic", generator=torch.Generator().manual_seed(1))
    part = lowp.quantize(x[:1000], "e5m2", "stochastic", generator=torch.Generator().manual_seed(1))
    assert torch.equal(full.reshape(-1)[:1000], part)


def test_random_bits_uniform():
    key = draw_key(torch.Generator().manual_seed(0))
    n = 1 << 16
    r = random_bits(n, key, 8)
    assert int(r.min()) >= 0 and int(r.max()) < 256
    counts = torch.bincount(r, minlength=256).double()
    chi2 = float(((counts - n / 256) ** 2 / (n / 256)).sum())
    assert chi2 < 255 + 6 * math.sqrt(2 * 255)  # chi-square, 255 dof: mean 255, sd 22.6; 6 sd
    # single bits are balanced and consecutive words uncorrelated
    h = hash_bits(torch.arange(n, dtype=torch.int64), key)
    assert int(h.max()) < 2**32 and int(h.min()) >= 0
    for b in (0, 13, 31):
        frac = float(((h >> b) & 1).double().mean())
        assert abs(frac - 0.5) < 6 * 0.5 / math.sqrt(n)
    u = h.double() / 2**32 - 0.5
    corr = float((u[1:] * u[:-1]).mean() / u.var())
    assert abs(corr) < 6 / math.sqrt(n)


def test_hash_bits32_is_hash_bits_in_int32():
    """The compiled kernels' int32 hash gives the reference's 32-bit words (as two's-complement patterns), eagerly
    and compiled, for indices up to 2^31 - 1 and keys with high bits set."""
    idx = torch.cat([torch.arange(1 << 16), torch.randint(0, 2**31 - 1, (1 << 16,),
                                                          generator=torch.Generator().manual_seed(0))])
    compiled = torch.compile(hash_bits32, dynamic=True, fullgraph=True)
    for key in (torch.tensor([0, 0]), torch.tensor([2**31 - 2, 123456789]), draw_key(torch.Generator().manual_seed(5))):
        ref = hash_bits(idx, key)
        for fn in (hash_bits32, compiled):
            assert torch.equal(fn(idx.to(torch.int32), key).to(torch.int64) & MASK32, ref)


def test_mode_and_rand_bits_validation():
    assert ROUNDING_MODES == ("nearest", "away", "zero", "up", "down", "stochastic")
    assert check_rounding("up") == "up"
    with pytest.raises(ValueError, match="nearest, away, zero, up, down, stochastic"):
        check_rounding("even")
    assert check_rand_bits(None) == 32 and check_rand_bits(8) == 8
    for bad in (0, 33, -1, 2.5, True, "8"):
        with pytest.raises(ValueError, match="rand_bits"):
            check_rand_bits(bad)


def test_directed_modes_order():
    """down <= nearest, away <= up and zero is toward zero, for every float format and random inputs."""
    x0 = in_range_tensor(5000, 8)
    for name in ("bf16", "e4m3", "e5m2", "e2m3", "fp8-152", "int8", "fixed<3,5>", "mxfp6_e3m2", "dfp16"):
        lim = {"e2m3": 7.5, "fixed<3,5>": 3.9}.get(name)  # saturating formats: stay inside their range
        x = x0 if lim is None else x0.clamp(-lim, lim)
        d, u, z = (lowp.quantize(x, name, m) for m in ("down", "up", "zero"))
        for m in ("nearest", "away"):
            y = lowp.quantize(x, name, m)
            assert bool(((d <= y) & (y <= u)).all()), (name, m)
        assert bool((z.abs() <= x.abs()).all()), name
        if not name.startswith("mx"):  # OCP MX: a block's largest elements may saturate inside x even rounding out
            assert bool((d <= x).all()) and bool((x <= u).all()), name
        assert bool(torch.where(x >= 0, z == d, z == u).all()), name
