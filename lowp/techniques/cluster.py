"""Cluster quantization (Mellempudi et al. 2017, "Mixed low-precision deep learning inference using dynamic fixed
point"): the output filters are split into clusters of N consecutive filters and each cluster shares one scale.

- ternary: each cluster, read as one vector of N·K weights, is α·t with the exact optimum or threshold rule of
  ``lowp.formats.TernaryFormat(group=N·K)``;
- 4-bit (any ``bits``): symmetric integers with the cluster's scale amax/(2^(b−1)−1), ``lowp.formats.IntFormat``
  with the amax taken over the cluster.

A filter count that is not a multiple of N leaves a smaller last cluster (zero rows are padded, which changes
neither amax nor the ternary optimum). With ternary weights and integer activations a dot product is all additions
plus one multiplication by α per output: the fraction replaced is 1 − 1/K per layer. 4-bit weights replace none.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Iterable

import torch
from torch import nn

from ..formats import IntFormat, TernaryFormat
from .ptq import DictConfig, WeightFn, check_ternary_options, int_weight_fn, quantize_model

KINDS = ("ternary", "int4")


@dataclasses.dataclass(frozen=True)
class ClusterConfig(DictConfig):
    cluster: int = 4
    kind: str = "ternary"
    method: str = "optimal"
    act_bits: int | None = 8
    calibration: str = "minmax"
    edge_bits: int | None = 8
    fold_bn: bool = True

    def __post_init__(self) -> None:
        check_ternary_options("cluster size", self.cluster, self.method, self.act_bits, self.calibration)
        if self.kind not in KINDS:
            raise ValueError(f"unknown cluster kind {self.kind!r}; valid: {', '.join(KINDS)}")


def cluster_weight(w: torch.Tensor, cluster: int, kind: str = "ternary", method: str = "optimal") -> torch.Tensor:
    """Quantize ``w`` (out, ...) with one scale per cluster of ``cluster`` output filters."""
    if kind not in KINDS:
        raise ValueError(f"unknown cluster kind {kind!r}; valid: {', '.join(KINDS)}")
    flat = w.detach().reshape(w.shape[0], -1)
    out, k = flat.shape
    pad = (-out) % cluster
    if pad:
        flat = torch.cat([flat, flat.new_zeros(pad, k)])
    rows = flat.reshape(-1, cluster * k)  # one row per cluster
    if kind == "ternary":
        q = TernaryFormat(group=cluster * k, method=method).quantize(rows)
    else:
        q = IntFormat(4, axis=1).quantize(rows)  # IntFormat's axis is the one reduced over: one scale per row
    return q.reshape(-1, k)[:out].reshape(w.shape)


def cluster_weight_fn(cluster: int, kind: str = "ternary", method: str = "optimal") -> WeightFn:
    def fn(name: str, mod: nn.Module):
        w = mod.weight
        wq = cluster_weight(w, cluster, kind, method)
        k = w[0].numel()
        bits = 2 if kind == "ternary" else 4
        nscale = math.ceil(w.shape[0] / cluster)
        bb = 4 * mod.bias.numel() if mod.bias is not None else 0
        return wq, {"method": f"cluster-{kind}-n{cluster}", "weight_bits": bits, "weights": w.numel(),
                    "size_bytes": (bits * w.numel() + 7) // 8 + 4 * nscale + bb,
                    "mults_per_mac": 1.0 / k if kind == "ternary" else 1.0,
                    "sparsity": float((wq == 0).float().mean())}
    return fn


def cluster_quantize(model: nn.Module, calib_data: Iterable[torch.Tensor],
                     config: ClusterConfig = ClusterConfig()) -> nn.Module:
    """A copy of ``model`` with cluster-ternary or cluster-4-bit weights and calibrated activations."""
    edge = config.edge_bits is not None
    return quantize_model(model, cluster_weight_fn(config.cluster, config.kind, config.method), calib_data,
                          act_bits=config.act_bits, calibration=config.calibration, fold_bn=config.fold_bn,
                          edge_fn=int_weight_fn(config.edge_bits) if edge else None, edge_layers=(edge, edge))
