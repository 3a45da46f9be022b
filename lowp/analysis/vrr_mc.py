"""Monte-Carlo estimate of the variance retention ratio (Sakr et al. 2019) by simulating the accumulation directly
with lowp's format machinery: products p ~ N(0, 1) rounded to FloatFormat(8, m_p), summed one at a time with
every partial sum rounded (nearest-even, one rounding from the exact float64 sum) to FloatFormat(8, m_acc);
chunked as ``lowp.matmul`` (ops/accumulate.py: sequential within chunks of ``chunk`` consecutive indices, then
chunk results added sequentially). Vectorised over trials (and chunks); the loop runs over the accumulation index only.
Returns the same two ratios as ``vrr.vrr_table``: Var(ŝ_n)/Var(s_n) and Cov(ŝ_n, s_n)/Var(s_n), with the exact
sums s_n kept in float64 (empirical variances of the same trials: their ratio has a small Monte-Carlo error).
"""
from __future__ import annotations

import dataclasses

import torch

from ..formats import FloatFormat
from ..quantize import quantize


@dataclasses.dataclass(frozen=True)
class VRREstimate:
    m_acc: int
    m_p: int
    n: int
    chunk: int | None
    trials: int
    vrr: float
    retained: float


def _seq(p: torch.Tensor, acc: FloatFormat) -> torch.Tensor:
    """Sequential rounded sum along the last dim of p (float64); vectorised over the leading dims."""
    s = torch.zeros(p.shape[:-1], dtype=torch.float64)
    for i in range(p.shape[-1]):
        s = quantize(s + p[..., i], acc)
    return s


def vrr_monte_carlo(m_acc: int, m_p: int, n: int, chunk: int | None = None, *, trials: int = 4000,
                    seed: int = 0) -> VRREstimate:
    """Simulate ``trials`` accumulations of length n (see the module docstring)."""
    if not 0 <= m_acc <= 23 or not 0 <= m_p <= 23:
        raise ValueError(f"m_acc and m_p must be in 0..23 (float32-emulated formats), got {m_acc}, {m_p}")
    if n < 1 or trials < 2:
        raise ValueError(f"need n >= 1 and trials >= 2, got n={n}, trials={trials}")
    g = torch.Generator().manual_seed(seed)
    p = torch.randn(trials, n, generator=g, dtype=torch.float64)
    p = quantize(p, FloatFormat(8, m_p))
    acc = FloatFormat(8, m_acc)
    if chunk is None or chunk >= n:
        s_hat = _seq(p, acc)
    else:
        nc = -(-n // chunk)
        pad = torch.zeros(trials, nc * chunk - n, dtype=torch.float64)  # zeros: adding 0 is exact
        parts = _seq(torch.cat([p, pad], 1).view(trials, nc, chunk), acc)
        s_hat = _seq(parts, acc)
    s = p.sum(1)
    var_s = s.var().item()
    cov = ((s_hat - s_hat.mean()) * (s - s.mean())).sum().item() / (trials - 1)
    return VRREstimate(m_acc, m_p, n, chunk, trials, s_hat.var().item() / var_s, cov / var_s)
