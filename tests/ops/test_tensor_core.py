"""The tensor-core accumulator model of lowp.matmul (``lowp.ops.tensor_core``) against an exact loop written here
with fractions.Fraction: products exact, each group aligned to the largest exponent present and truncated (or
rounded to nearest even) to ``man`` bits below it, promotion into an FP32 accumulator with one rounding each."""
import itertools
import math
from fractions import Fraction

import pytest
import torch

import lowp
from lowp.ops.tensor_core import TensorCoreAccumulator, get_accumulator

from hw_refs import flog2, rn32  # exact references (tests/formats on the path)


def align(t: Fraction, q: Fraction, mode: str) -> Fraction:
    v = t / q
    n = math.trunc(v) if mode == "truncate" else round(v)
    return n * q


def reference_dot(xs, ys, acc: TensorCoreAccumulator) -> float:
    prods = [Fraction(x) * Fraction(y) for x, y in zip(xs, ys)]
    k = len(prods)
    c = acc.promote or k
    partials = []
    for start in range(0, k, c):
        r = Fraction(0)
        chunk = prods[start:start + c]
        for i in range(0, len(chunk), acc.group):
            terms = [r] + chunk[i:i + acc.group]
            nz = [abs(t) for t in terms if t != 0]
            if not nz:
                continue
            q = Fraction(2) ** (flog2(max(nz)) - acc.man)
            r = sum(align(t, q, acc.align) for t in terms)
        partials.append(r)
    f = rn32(partials[0])
    for r in partials[1:]:
        f = rn32(f + r)
    return float(f)


def operands(m, k, n, seed, kind):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(m, k, generator=g)
    b = torch.randn(k, n, generator=g)
    if kind == "e4m3":  # FP8 operands, positive-mean (swamping grows with the running sum)
        a = (a.abs() + 0.5).to(torch.float8_e4m3fn).float()
        b = (b * 4).to(torch.float8_e4m3fn).float()
    elif kind == "spread":  # float32 operands over 2^±20, mixed signs (cancellation)
        a = a * torch.exp2(torch.randint(-20, 20, (m, k), generator=g).float())
        b = b * torch.exp2(torch.randint(-20, 20, (k, n), generator=g).float())
    return a, b


CONFIGS = [TensorCoreAccumulator(man, align, promote, group)
           for man, align, promote, group in itertools.product((3, 8, 14), ("truncate", "nearest"),
                                                               (None, 4, 8), (1, 2, 4))]


@pytest.mark.parametrize("acc", CONFIGS, ids=lambda a: a.name)
@pytest.mark.parametrize("kind", ["e4m3", "spread"])
def test_against_exact_loop(acc, kind):
    m, k, n = 3, 26, 4  # K not a multiple of the promotion interval: a short last interval
    a, b = operands(m, k, n, seed=acc.man + acc.group, kind=kind)
    a[0, 3] = 0.0
    a[1, :] = 0.0  # an all-zero row: output 0
    got = lowp.matmul(a, b, accumulate=acc)
    assert got.dtype == torch.float32
    for i in range(m):
        for j in range(n):
            exp = reference_dot(a[i].tolist(), b[:, j].tolist(), acc)
            assert float(got[i, j]) == exp, (acc.name, kind, i, j, float(got[i, j]), exp)


def test_names_batch_and_specials():
    acc = get_accumulator("tc14-p128")
    assert acc == TensorCoreAccumulator(14, "truncate", 128, 1) and acc.name == "tc14-p128"
    assert get_accumulator("tc10-g4-rn") == TensorCoreAccumulator(10, "nearest", None, 4)
    with pytest.raises(ValueError, match="unknown accumulator"):
        get_accumulator("tc")
    with pytest.raises(ValueError, match="chunk"):
        lowp.matmul(torch.ones(2, 3), torch.ones(3, 2), accumulate="tc14", chunk=4)
    with pytest.raises(ValueError, match="multiple of group"):
        TensorCoreAccumulator(14, promote=100, group=32)
    a, b = operands(2, 40, 3, seed=1, kind="e4m3")
    batched = lowp.matmul(a.expand(2, 2, 40), b, accumulate="tc8-p16")
    assert torch.equal(batched[1], lowp.matmul(a, b, accumulate="tc8-p16"))
    assert torch.equal(lowp.matmul(torch.zeros(2, 0), torch.zeros(0, 3), accumulate="tc14"), torch.zeros(2, 3))
    assert lowp.matmul(torch.zeros(0, 2, 4), torch.ones(4, 3), accumulate="tc14").shape == (0, 2, 3)
    v = lowp.matmul(a[0], b, accumulate="tc8-p16")  # 1-D operand, as torch.matmul
    assert v.shape == (3,) and torch.equal(v, lowp.matmul(a[:1], b, accumulate="tc8-p16")[0])
    a[0, 5] = float("nan")
    b[7, 1] = float("inf")
    y = lowp.matmul(a, b, accumulate="tc14")
    assert bool(torch.isnan(y[0]).all()) and y[1, 1] == float("inf")


def test_many_bits_close_to_fp32_and_few_bits_lose():
    """man = 23 with nearest alignment is within a few FP32 ulps of the exact sum; man = 14 truncated without
    promotion is measurably worse on a long positive-mean reduction, and promoting every 128 recovers most."""
    a, b = operands(8, 4096, 8, seed=3, kind="e4m3")
    b = b.abs()
    exact = a.double() @ b.double()
    err = lambda acc: float(((lowp.matmul(a, b, accumulate=acc).double() - exact).abs() / exact.abs()).mean())
    e23, e14, e14p = err("tc23-rn"), err("tc14"), err("tc14-p128")
    assert e23 < 1e-6
    assert e14 > 1e-3  # swamping: each truncation drops up to 2^-14 of the running sum
    assert e14p < e14 / 20
