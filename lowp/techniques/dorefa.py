"""DoReFa-Net quantizers (Zhou et al. 2016), used as the weight quantizer of PACT (Choi et al. 2018) and as the
"clipped ReLU" activation baseline the PACT paper compares against.

- ``quantize_k(v, k)``: round(v·(2^k − 1)) / (2^k − 1) with a straight-through gradient (∂/∂v = 1). For v in [0, 1]
  this is the k-bit unsigned grid; for v in [−1, 1] it is a sign plus (k)-bit magnitude grid (WRPN uses it so).
  Rounding is the shared ``lowp.formats.scaled.round_to_int`` (nearest, ties to even).
- Weights, k ≥ 2: w_q = 2·quantize_k(tanh(w) / (2·max|tanh w|) + ½) − 1 ∈ [−1, 1]; the gradient flows through tanh
  and the max by autograd, straight-through only at the rounding (as the DoReFa reference code).
  k = 1: w_q = sign(w)·E|w| with E|w| treated as a constant and identity gradient (DoReFa's 1-bit case); sign(0)
  is taken as +1 so that every weight is one of the two values ±E|w|.
- Activations (DoReFa baseline): a_q = quantize_k(clip(x, 0, 1), k); gradient 1 inside [0, 1], 0 outside.
"""
from __future__ import annotations

import torch
from torch import nn

from ..formats.scaled import round_to_int

MAX_BITS = 16


def check_bits(what: str, bits: int, lo: int = 1, hi: int = MAX_BITS) -> int:
    """``bits`` as an int in lo..hi, or ValueError naming ``what``."""
    if isinstance(bits, bool) or not isinstance(bits, int) or not lo <= bits <= hi:
        raise ValueError(f"{what} must be an int in {lo}..{hi}, got {bits!r}")
    return bits


class _RoundGridSTE(torch.autograd.Function):
    """round(v·n)/n forward, identity backward."""

    @staticmethod
    def forward(ctx, v: torch.Tensor, n: int) -> torch.Tensor:
        return round_to_int(v * n, "nearest", 32, None) / n

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        return g, None


def quantize_k(v: torch.Tensor, k: int) -> torch.Tensor:
    """DoReFa's quantize_k: round(v·(2^k − 1)) / (2^k − 1), straight-through gradient."""
    check_bits("quantize_k bits", k)
    return _RoundGridSTE.apply(v, 2**k - 1)


class _SignMeanSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, w: torch.Tensor) -> torch.Tensor:
        e = w.abs().mean()
        return torch.where(w >= 0, e, -e)

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        return g


def dorefa_weight(w: torch.Tensor, bits: int) -> torch.Tensor:
    """DoReFa weight quantization to ``bits`` bits (module docstring); returns values in [−1, 1] (k ≥ 2) or
    ±E|w| (k = 1)."""
    check_bits("DoReFa weight bits", bits)
    if bits == 1:
        return _SignMeanSTE.apply(w)
    t = torch.tanh(w)
    m = t.abs().max().clamp(min=torch.finfo(t.dtype).tiny)  # an all-zero weight stays 0 (v = ½ → 2·½ − 1)
    return 2 * quantize_k(t / (2 * m) + 0.5, bits) - 1


def unit_clip_act(x: torch.Tensor, bits: int) -> torch.Tensor:
    """DoReFa / WRPN activation: quantize_k(clip(x, 0, 1), bits)."""
    return quantize_k(torch.clamp(x, 0.0, 1.0), bits)


class DoReFaWeight(nn.Module):
    """Weight quantizer module (no parameters): ``forward(w) = dorefa_weight(w, bits)``."""

    def __init__(self, bits: int) -> None:
        super().__init__()
        self.bits = check_bits("DoReFa weight bits", bits)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return dorefa_weight(w, self.bits)

    def extra_repr(self) -> str:
        return f"bits={self.bits}"


class UnitClipAct(nn.Module):
    """Activation quantizer clip(x, 0, 1) → k bits (DoReFa's activations, WRPN's activations)."""

    def __init__(self, bits: int) -> None:
        super().__init__()
        self.bits = check_bits("activation bits", bits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return unit_clip_act(x, self.bits)

    def extra_repr(self) -> str:
        return f"bits={self.bits}"
