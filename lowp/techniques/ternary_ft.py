"""Ternary fine-tuning (Mellempudi et al. 2017, "Ternary Neural Networks with Fine-Grained Quantization", §
fine-tuning at N = 64): start from trained FP32 weights, then train with FGQ-ternary weights in the forward pass.

Forward: w_t = α_g · t with t ∈ {−1, 0, 1}, one α per group of N consecutive weights along the reduction dims
(``lowp.formats.TernaryFormat``: the exact per-group optimum, or the 0.7·mean|w| threshold rule). Backward:
straight-through (``lowp.quantize_ste``), so the FP32 latent weights keep accumulating small updates and the
ternary pattern can change from step to step. Activations optionally k-bit (``IntAct``: symmetric per-tensor
integers with an amax scale, ``lowp.formats.IntFormat``; the paper uses 8-bit and 4-bit activations).
Used by the ``ternary-ft:N[:A]`` model transform and the ``ternary-ft-gN[-aA]`` recipes (``lowp.techniques.qat``).
"""
from __future__ import annotations

import torch
from torch import nn

from ..formats import IntFormat, TernaryFormat
from ..quantize import quantize_ste
from .dorefa import check_bits


class TernaryWeight(nn.Module):
    """Weight quantizer: FGQ ternary with group ``group`` (straight-through)."""

    def __init__(self, group: int = 64, method: str = "optimal") -> None:
        super().__init__()
        self.fmt = TernaryFormat(group, method)  # validates group and method

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return quantize_ste(w, self.fmt)

    def extra_repr(self) -> str:
        return f"group={self.fmt.group}, method={self.fmt.method}"


class IntQuant(nn.Module):
    """Symmetric ``bits``-bit integers with a per-tensor amax scale, straight-through (weights or activations)."""

    def __init__(self, bits: int) -> None:
        super().__init__()
        self.fmt = IntFormat(check_bits("integer bits", bits, lo=2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return quantize_ste(x, self.fmt)

    def extra_repr(self) -> str:
        return f"bits={self.fmt.bits}"
