"""lowp.matmul accumulating in fixed point (``accumulate="fixed<IL,FL>"``, Gupta et al. 2015) against an exact
reference written here: products and sums as fractions.Fraction, every partial sum rounded to the grid k·2^-FL
(nearest, ties to even) and saturated to [-2^(IL-1), 2^(IL-1) - 2^-FL], with the chunking of ops/accumulate.py:
inside a chunk the register starts with the chunk's first product, r <- Q(r + p_k); the chunk results are added
the same way, T <- Q(T + r_j); the output is Q(T)."""
from fractions import Fraction

import pytest
import torch

from lowp.ops.accumulate import matmul


def q_fixed(x: Fraction, il: int, fl: int) -> Fraction:
    step = Fraction(1, 2**fl) if fl >= 0 else Fraction(2 ** -fl)
    k = round(x / step)  # Fraction.__round__: nearest, ties to even
    n = il + fl - 1
    return max(-(2**n), min(2**n - 1, k)) * step


def reference(a: torch.Tensor, b: torch.Tensor, il: int, fl: int, chunk: int | None) -> list[list[float]]:
    m, kk = a.shape
    n = b.shape[1]
    c = kk if chunk is None or chunk >= kk else chunk
    out = []
    for i in range(m):
        row = []
        for j in range(n):
            prods = [Fraction(float(a[i, t])) * Fraction(float(b[t, j])) for t in range(kk)]
            chunks = []
            for s in range(0, kk, c):
                r = prods[s]
                for p in prods[s + 1:s + c]:
                    r = q_fixed(r + p, il, fl)
                chunks.append(r)
            t = chunks[0]
            for r in chunks[1:]:
                t = q_fixed(t + r, il, fl)
            row.append(float(q_fixed(t, il, fl)))
        out.append(row)
    return out


def operands(m, k, n, seed, scale):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(m, k, generator=g) * scale
    b = torch.randn(k, n, generator=g)
    a[0, :3] = torch.tensor([0.5, -0.25, 2.0**-12])  # a few dyadic products, on and off the grid
    return a, b


@pytest.mark.parametrize("il,fl", [(8, 8), (4, 12), (16, 16), (6, 2)])
@pytest.mark.parametrize("chunk", [None, 4, 7])
def test_fixed_point_accumulation_matches_exact_reference(il, fl, chunk):
    a, b = operands(5, 29, 4, seed=il * 31 + fl, scale=0.7)
    got = matmul(a, b, accumulate=f"fixed<{il},{fl}>", chunk=chunk)
    exp = torch.tensor(reference(a, b, il, fl, chunk), dtype=torch.float64)
    assert got.dtype == torch.float32
    assert torch.equal(got.double(), exp), (got.double() - exp).abs().max()
    # every output lies on the grid and in range
    assert bool(((got.double() * 2.0**fl) == torch.round(got.double() * 2.0**fl)).all())
    assert float(got.abs().max()) <= 2.0 ** (il - 1)


@pytest.mark.parametrize("chunk", [None, 3])
def test_fixed_point_accumulator_saturates_at_every_step(chunk):
    """Large partial sums clamp to the range at each add (not once at the end): the exact reference with per-step
    saturation differs from saturating the exact sum, and matmul follows the former."""
    il, fl = 4, 4  # range [-8, 7.9375]
    a = torch.tensor([[6.0, 5.0, -4.0, -3.0, 1.0, 0.3]])
    b = torch.ones(6, 1)
    got = matmul(a, b, accumulate=f"fixed<{il},{fl}>", chunk=chunk)
    exp = reference(a, b, il, fl, chunk)[0][0]
    assert float(got) == exp
    if chunk is None:  # 6 -> 7.9375 (sat) -> 3.9375 -> 0.9375 -> 1.9375 -> 2.25 (0.3 rounds to 0.3125)
        assert exp == 2.25
        assert exp != float(q_fixed(sum(Fraction(v) for v in a[0].tolist()), il, fl))
