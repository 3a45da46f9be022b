"""Fine-grained ternary quantization, FGQ (Mellempudi et al. 2017, "Ternary neural networks with fine-grained
quantization").

Weights are split into groups of N consecutive elements along the reduction dimension (for a convolution, along
the input channels at each kernel position: the weight (out, C, kh, kw) is read as (out, kh, kw, C)), and each
group is approximated by α·t, t ∈ {−1, 0, +1}, with the exact per-group optimum or the Δ = 0.7·mean|w| threshold
rule — both are ``lowp.formats.TernaryFormat(group=N, method)``, used here, not re-implemented. Activations are
8- or 4-bit integers calibrated per tensor (``lowp.techniques.ptq.quantize_model``).

A dot product of length K then needs ⌈K/N⌉ multiplications (one α per group) and K ternary additions, so the
fraction of multiplications replaced by additions in a layer is 1 − ⌈K/N⌉/K (≈ 1 − 1/N: 75% for N = 4, 98.4% for
N = 64). Size: 2 bits per weight plus one FP32 α per group.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Iterable

import torch
from torch import nn

from ..formats import TernaryFormat
from .ptq import DictConfig, WeightFn, check_ternary_options, int_weight_fn, quantize_model

GROUPS = (4, 8, 16, 32, 64)


@dataclasses.dataclass(frozen=True)
class FGQConfig(DictConfig):
    """FGQ settings: group size N, ternary method, activation bits; first/last layer weights as ``edge_bits``-bit
    integers per channel (None: ternary too) — the paper keeps the first layer at higher precision."""

    group: int = 4
    method: str = "optimal"
    act_bits: int | None = 8
    calibration: str = "minmax"
    edge_bits: int | None = 8
    fold_bn: bool = True

    def __post_init__(self) -> None:
        check_ternary_options("FGQ group", self.group, self.method, self.act_bits, self.calibration)


def reduction_view(w: torch.Tensor) -> tuple[torch.Tensor, callable]:
    """(out, K) view of a weight with the input channel fastest for convolutions, and its inverse."""
    if w.dim() <= 2:
        return w.reshape(w.shape[0], -1), lambda y: y.reshape(w.shape)
    perm = (0, *range(2, w.dim()), 1)
    wt = w.permute(perm)
    shape_t = wt.shape
    inv = [perm.index(i) for i in range(w.dim())]
    return wt.reshape(w.shape[0], -1), lambda y: y.reshape(shape_t).permute(inv).contiguous()


def fgq_weight(w: torch.Tensor, group: int, method: str = "optimal") -> torch.Tensor:
    """FGQ-ternarize ``w`` (groups of ``group`` along the reduction dimension); returns α·t in w's shape."""
    flat, inv = reduction_view(w.detach())
    return inv(TernaryFormat(group=group, method=method).quantize(flat))


def ternary_info(w: torch.Tensor, wq: torch.Tensor, group: int, bias_bytes: int, method: str) -> dict[str, Any]:
    k = w[0].numel()
    ngroups = w.shape[0] * math.ceil(k / group)
    return {"method": method, "weight_bits": 2, "weights": w.numel(),
            "size_bytes": (2 * w.numel() + 7) // 8 + 4 * ngroups + bias_bytes,
            "mults_per_mac": math.ceil(k / group) / k, "sparsity": float((wq == 0).float().mean())}


def fgq_weight_fn(group: int, method: str = "optimal") -> WeightFn:
    def fn(name: str, mod: nn.Module):
        wq = fgq_weight(mod.weight, group, method)
        bb = 4 * mod.bias.numel() if mod.bias is not None else 0
        return wq, ternary_info(mod.weight, wq, group, bb, f"fgq-n{group}")
    return fn


def fgq(model: nn.Module, calib_data: Iterable[torch.Tensor], config: FGQConfig = FGQConfig()) -> nn.Module:
    """A copy of ``model`` with FGQ-ternary weights and calibrated ``act_bits`` activations."""
    edge = config.edge_bits is not None
    return quantize_model(model, fgq_weight_fn(config.group, config.method), calib_data, act_bits=config.act_bits,
                          calibration=config.calibration, fold_bn=config.fold_bn,
                          edge_fn=int_weight_fn(config.edge_bits) if edge else None, edge_layers=(edge, edge))
