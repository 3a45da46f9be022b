"""Accumulation bit-width analysis: the variance retention ratio (Sakr et al. 2019, "Accumulation bit-width scaling
for ultra-low precision training of deep networks", ICLR 2019).

Setting (the paper's): a dot product s_n = p_1 + ... + p_n of n i.i.d. zero-mean products of variance σ², each with
``m_p`` mantissa bits, summed one at a time in a float accumulator with ``m_acc`` mantissa bits, rounding to nearest
(ties to even) after every add: ŝ_i = fl(ŝ_{i-1} + p_i). When |ŝ| is large, the accumulator's ulp u = 2^(⌊log2|ŝ|⌋ -
m_acc) exceeds the products, which are then *swamped* (lost entirely: "full swamping", exponent gap > m_acc) or lose
their low bits ("partial swamping", gap in (m_acc - m_p, m_acc]). The computed sum stops growing, and its spread
across an ensemble shrinks. The paper measures this by the **variance retention ratio** VRR = Var(ŝ_n) / Var(s_n).

What the paper says (abstract, in ``seeds/``) and what is reconstructed here. The seed holds only the abstract
("loss of information manifests itself as a reduction in variance in an ensemble of partial sums ... equations that
relate this variance to the length of accumulation and the minimum number of bits"). The paper's closed form
(Theorem 1: sums over i of Gaussian tail probabilities of the partial sum exceeding ~2^m_acc·σ, i.e. terms of the
form 2Q(2^m_acc/√i)), its chunked corollary (a product of an intra-chunk and an inter-chunk ratio) and its cut-off
(the "normalized exponential variance lost" v(n) = exp(n·(1 - VRR)) kept below 50) are recalled from the paper,
not read from the seed. The formulas below are our own derivation in the same model, checked against a Monte-Carlo
simulation (``vrr_monte_carlo``) rather than against the paper's tables, which we could not read:

* The increments e_i = ŝ_i - ŝ_{i-1} are (nearly) martingale differences under round-to-nearest, so
  Var(ŝ_n) = Σ_i E[e_i²] and Cov(ŝ_n, s_n) = Σ_i E[e_i p_i].
* Given ŝ_{i-1} in the binade [2^e, 2^{e+1}) (ulp u = 2^{e-m_acc}, t = u/σ) and p ~ N(0, σ²), e_i = round_u(p):
  E[p·round_u(p)] = 2uσ Σ_{k≥1} φ((k-½)t)  (exact for a continuous Gaussian; ≈ σ² to 1e-8 for t < 1), and
  E[round_u(p)²] = σ² + (u²/12)·P(u/2 ≤ |p| < 2^m_p·u)  for t < 1 (Widrow's uncorrelated rounding noise, present
  only where p has bits below u: partial swamping), 2u² Σ_k k² P(round_u(p) = ±k·u) for t ≥ 1 (exact).
* ŝ_{i-1} ~ N(0, V_{i-1}) with V_i = V_{i-1} + E[e_i²] (recursion; Heun steps of size ≤ i/256 for long sums),
  the binade probabilities are differences of Φ: a finite sum of Gaussian CDF terms per step.

Two ratios come out: ``vrr`` = Var(ŝ_n)/(nσ²) (the paper's definition; with round-to-nearest it can slightly exceed
1 because rounding noise adds variance) and ``retained`` = Cov(ŝ_n, s_n)/(nσ²), the fraction of the true sum's
variance that survives (≤ 1, the quantity the loss of information is about). The minimum-bits criterion uses the
retained ratio: v(n) = exp(n·(1 - retained)) < 50, i.e. less than ln 50 ≈ 3.9 products' worth of variance is lost.

Finding (derivation and simulation agree): with round-to-nearest the loss is not only the Gaussian-tail swamping
of the paper's model. Each time ŝ + p crosses a binade boundary upward it is rounded on a grid twice as coarse,
which pulls the sum toward zero: E[fl(ŝ+p) - (ŝ+p) | ŝ] ≈ -(u²/8)·φ(distance to the boundary/σ)/σ. This drift
makes 1 - retained ≈ κ·n·2^(-2·m_acc) (κ ≈ 0.02-0.03). Hence the minimum width grows by one bit per 4× n for a
fixed *fraction* lost (criterion "relative", as the paper's √n argument predicts) but by one bit per 2× n under the
v(n) < 50 cut-off, which bounds the *absolute* variance lost (criterion "v").

Chunked accumulation (chunk c, as ``lowp.matmul``): intra-chunk sums of length c, then the ⌈n/c⌉ chunk sums (accumulator
values: m_p = m_acc, variance V(c)) added sequentially; ratios multiply: VRR = VRR(c)·VRR_inter(⌈n/c⌉).
Not modelled: the first product rounded when m_p > m_acc, binade crossings of ŝ + p, accumulator overflow/underflow
(exponent range assumed wide), ties. The tolerance against Monte-Carlo is stated in the tests.
"""
from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np

V_CUTOFF = 50.0  # Sakr et al.'s cut-off on the normalized exponential variance lost (recalled, see module doc)
MAX_ACC_BITS = 23  # float32's mantissa: the widest accumulator lowp's FloatFormat emulates
_BINADES = np.arange(-40, 12)  # binades of |ŝ| around its standard deviation (mass outside is < 1e-12)


def _phi(x: np.ndarray) -> np.ndarray:
    return np.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)


def _Phi(x: np.ndarray) -> np.ndarray:
    from scipy.special import ndtr  # noqa: PLC0415  (scipy ships with scikit-learn)
    return ndtr(x)


def _round_moments(t: np.ndarray, m_p: int) -> tuple[np.ndarray, np.ndarray]:
    """For p ~ N(0,1) rounded to multiples of t: (E[p·round_t(p)], E[round_t(p)²]) as arrays shaped like t."""
    ret = np.ones_like(t)
    tot = 1.0 + (t * t / 12.0) * np.clip(2 * (_Phi((2.0**m_p) * t) - _Phi(t / 2)), 0, None)
    big = t >= 1.0
    if big.any():
        tb = t[big][:, None]
        k = np.arange(1, 17)[None, :]  # (k - 1/2)·t > 15 for t >= 1: the tail beyond is < 1e-50
        ret[big] = (2 * tb[:, 0]) * _phi((k - 0.5) * tb).sum(1)
        pk = _Phi((k + 0.5) * tb) - _Phi((k - 0.5) * tb)
        tot[big] = 2 * tb[:, 0] ** 2 * (k * k * pk).sum(1)
    return ret, tot


def _rates(V: np.ndarray, m_acc: np.ndarray, m_p: int, sigma: float) -> tuple[np.ndarray, ...]:
    """One step's expectations with the partial sum ŝ ~ N(0, V), per accumulator width: E[e·p]/σ², E[e²]/σ² and the
    drift E[e·ŝ] (absolute units), for products p ~ N(0, σ²)."""
    sd = np.sqrt(np.maximum(V, 1e-300))
    e = np.floor(np.log2(sd))[:, None] + _BINADES[None, :]
    lo, hi = np.exp2(e) / sd[:, None], np.exp2(e + 1) / sd[:, None]
    prob = 2 * (_Phi(hi) - _Phi(lo))
    t = np.exp2(e - m_acc[:, None]) / sigma
    ret, tot = _round_moments(t.ravel(), m_p)
    # drift toward zero from the grid doubling at each binade boundary B = 2^b (ulp u_b = 2^(b-1-m_acc) below it):
    # E[fl(ŝ+p) - (ŝ+p) | ŝ] ≈ -(u_b²/8)·φ((B - |ŝ|)/σ)/σ·sign(ŝ), so E[e·ŝ] ≈ -Σ_b (u_b²/8)·B·2·f(B), with f the
    # density of ŝ smoothed by p: N(0, V + σ²).
    b = e + 1
    w = np.sqrt(np.maximum(V, 0) + sigma * sigma)[:, None]
    drift = -(np.exp2(2 * (b - 1 - m_acc[:, None])) / 8 * np.exp2(b) * 2 * _phi(np.exp2(b) / w) / w).sum(1)
    return (prob * ret.reshape(t.shape)).sum(1), (prob * tot.reshape(t.shape)).sum(1), drift


def _sequential(m_acc: np.ndarray, m_p: int, n: int, sigma: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """(Var(ŝ_n), Cov(ŝ_n, s_n)) / σ² for sequential accumulation of n products ~ N(0, σ²), one per m_acc.

    Recursion: V_i = V_{i-1} + E[e²] + 2E[e·ŝ], C_i = C_{i-1} + E[e·p] + E[e·ŝ]·C_{i-1}/V_{i-1} (the true partial
    sum regressed on the computed one), V_1 = C_1 = σ² (the first product lands exactly in the empty accumulator).
    Integrated with steps of up to i/256 indices, coefficients frozen at the step's midpoint and the linear drift
    solved exactly over the step (stable however strong the drift)."""
    s2 = sigma * sigma
    V = np.full(m_acc.shape, s2)
    C = np.full(m_acc.shape, s2)

    def coeffs(V):  # dV/di = a - k·V, dC/di = g - (k/2)·C with k = -2E[e·ŝ]/V >= 0
        r, v, dr = _rates(V, m_acc, m_p, sigma)
        return v * s2, np.maximum(-2 * dr / V, 0.0), r * s2

    def step(V, C, d, a, k, g):  # exact solution over d steps with frozen coefficients (stable for any k·d)
        kd = k * d
        ek, ek2 = np.exp(-kd), np.exp(-kd / 2)
        f1 = np.where(kd > 1e-8, -np.expm1(-kd) / np.maximum(k, 1e-300), d)
        f2 = np.where(kd > 1e-8, -np.expm1(-kd / 2) / np.maximum(k / 2, 1e-300), d)
        return V * ek + a * f1, C * ek2 + g * f2

    i = 1
    while i < n:
        d = min(n - i, max(1, i // 256))
        c0 = coeffs(V)
        if d > 1:  # midpoint coefficients for long steps
            Vh, _ = step(V, C, d / 2, *c0)
            c0 = coeffs(Vh)
        V, C = step(V, C, d, *c0)
        i += d
    return V / s2, C / s2


@dataclasses.dataclass(frozen=True)
class VRR:
    """Variance retention of an n-long accumulation: ``vrr`` = Var(ŝ_n)/Var(s_n) (paper's definition, rounding
    noise included), ``retained`` = Cov(ŝ_n, s_n)/Var(s_n) (variance of the true sum that survives)."""

    m_acc: int
    m_p: int
    n: int
    chunk: int | None
    vrr: float
    retained: float

    @property
    def v(self) -> float:
        """Normalized exponential variance lost v(n) = exp(n·(1 - retained)) (Sakr et al.'s cut-off quantity)."""
        return math.exp(min(700.0, self.n * (1.0 - self.retained)))


def _check(m_p: int, n: int, chunk: int | None) -> None:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"accumulation length n must be a positive int, got {n!r}")
    if isinstance(m_p, bool) or not isinstance(m_p, (int, np.integer)) or not 0 <= m_p <= 52:
        raise ValueError(f"product mantissa bits m_p must be an int in 0..52, got {m_p!r}")
    if chunk is not None and (isinstance(chunk, bool) or not isinstance(chunk, (int, np.integer)) or chunk < 1):
        raise ValueError(f"chunk must be a positive int or None, got {chunk!r}")


def vrr_table(m_accs, m_p: int, n: int, chunk: int | None = None) -> list[VRR]:
    """VRR for several accumulator widths at once (one vectorised recursion). chunk=None or >= n: sequential."""
    _check(m_p, n, chunk)
    m = tuple(int(a) for a in m_accs)
    if not m or min(m) < 0 or max(m) > 52:
        raise ValueError(f"accumulator mantissa bits must be ints in 0..52, got {list(m_accs)!r}")
    return list(_table(m, int(m_p), int(n), None if chunk is None else int(chunk)))


@functools.lru_cache(maxsize=256)
def _table(m_accs: tuple[int, ...], m_p: int, n: int, chunk: int | None) -> tuple[VRR, ...]:
    m = np.asarray(m_accs, dtype=np.int64)
    if chunk is None or chunk >= n:
        tot, ret = _sequential(m, m_p, n)
        return tuple(VRR(int(a), m_p, n, chunk, float(v / n), float(r / n)) for a, v, r in zip(m, tot, ret))
    nc, last = -(-n // chunk), n - (n // chunk) * chunk
    tot1, ret1 = _sequential(m, m_p, chunk)
    if last:
        totl, retl = _sequential(m, m_p, last)
        tot1s, ret1s = (n // chunk) * tot1 + totl, (n // chunk) * ret1 + retl
    else:
        tot1s, ret1s = nc * tot1, nc * ret1
    out = []
    for j, a in enumerate(m):  # inter-chunk stage: inputs are accumulator values of variance V(chunk)
        sig = math.sqrt(tot1[j])
        tot2, ret2 = _sequential(np.array([a]), int(a), nc, sig)
        out.append(VRR(int(a), m_p, n, chunk, float(tot1s[j] * tot2[0] / nc / n), float(ret1s[j] * ret2[0] / nc / n)))
    return tuple(out)


def vrr(m_acc: int, m_p: int, n: int, chunk: int | None = None) -> float:
    """Variance retention ratio Var(ŝ_n)/Var(s_n) of n products with m_p mantissa bits summed in an m_acc-bit
    accumulator (round to nearest after each add; chunked if ``chunk``). See the module docstring for the math."""
    return vrr_table([m_acc], m_p, n, chunk)[0].vrr


def retained_variance(m_acc: int, m_p: int, n: int, chunk: int | None = None) -> float:
    """Cov(ŝ_n, s_n)/Var(s_n): the fraction of the true sum's variance the accumulator keeps (≤ 1)."""
    return vrr_table([m_acc], m_p, n, chunk)[0].retained


CRITERIA = ("v", "relative")


def _passes(r: VRR, criterion: str, cutoff: float, eps: float) -> bool:
    if criterion == "v":
        return r.n * (1.0 - r.retained) < math.log(cutoff)
    return 1.0 - r.retained < eps


def min_accumulator_bits(n: int, m_p: int, chunk: int | None = None, *, criterion: str = "v",
                         cutoff: float = V_CUTOFF, eps: float = 1e-3, max_bits: int = MAX_ACC_BITS) -> int:
    """Smallest accumulator mantissa width m_acc whose accumulation keeps enough variance.

    criterion "v" (default, Sakr et al.'s): v(n) = exp(n·(1 - retained)) < cutoff (50), i.e. less than ln 50 ≈ 3.9
    products' worth of variance lost in total. criterion "relative": 1 - retained < eps, a fixed fraction lost.
    Since 1 - retained ≈ κ·n·2^(-2·m_acc) (κ ≈ 0.02-0.03 for Gaussian products, measured and derived), the answer
    grows by one bit per 4× n under "relative" and by one bit per 2× n under "v". Raises ValueError when even
    ``max_bits`` does not suffice."""
    if criterion not in CRITERIA:
        raise ValueError(f"unknown criterion {criterion!r}; valid: {', '.join(CRITERIA)}")
    if not cutoff > 1 or not 0 < eps < 1:
        raise ValueError(f"need cutoff > 1 and 0 < eps < 1, got cutoff={cutoff}, eps={eps}")
    for r in vrr_table(range(1, max_bits + 1), m_p, n, chunk):
        if _passes(r, criterion, cutoff, eps):
            return r.m_acc
    raise ValueError(f"no accumulator up to {max_bits} mantissa bits meets the {criterion!r} criterion for n={n}")
