"""FLOPs accounting for sparse training and inference (Kundu et al. 2023, AutoSparse).

Per GEMM-like layer (``nn.Linear``, ``nn.Conv1d``, ``nn.Conv2d`` and their emulated / parametrized subclasses)
the *dense* forward cost of one call on a sample input is counted by a forward hook, as 2 FLOPs per
multiply-accumulate (bias adds, activations, norms and the mask computation itself are not counted):

- Linear:  F = 2 · (#rows of the input) · in_features · out_features
- ConvNd:  F = 2 · (#output elements) · (in_channels / groups) · prod(kernel_size)

With ``density`` d = (non-zero entries of the effective weight ``module.weight``) / numel, one training step costs

- forward           d · F
- grad-input        d · F   (Wᵀ·δ; not counted for a layer whose input needs no gradient, e.g. the first layer)
- grad-weight       F while the layer's annealing factor α > 0 (masked weights still receive a gradient, so the
                    weight-gradient GEMM is dense), else d · F (only kept weights need a gradient)

and inference costs d · F. The ratios are against the same model dense (d = 1, where the dense grad-input is
counted for the same layers). ``sparsity`` is over the GEMM weights only (biases, norms excluded).
AutoSparse reports (2×, 7×) (training, inference) FLOPs reduction for ResNet-50 at 80% sparsity; the training
figure depends on how long α stays > 0 (see :mod:`lowp.techniques.autosparse`).

``sparsity_report(model, sample_input)`` returns a JSON-ready dict with ``sparsity`` (overall), ``layer_sparsity``,
``train_flops_ratio``, ``inference_flops_ratio`` and per-layer ``layers``; ``cumulative_train_flops_ratio`` sums
reports taken once per epoch (equal steps per epoch) into the ratio for a whole run.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Iterable

import torch
from torch import nn

from ..ops.modules import GEMM_TYPES


def gemm_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(qualified name, module) of every Linear/Conv1d/Conv2d (subclasses included) in registration order."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, GEMM_TYPES)]


def dense_forward_flops(module: nn.Module, inp: torch.Tensor, out: torch.Tensor) -> int:
    """Dense forward FLOPs (2 per MAC, no bias) of one call of a Linear/Conv layer with input ``inp``, output ``out``."""
    if isinstance(module, nn.Linear):
        rows = inp.numel() // module.in_features
        return 2 * rows * module.in_features * module.out_features
    if isinstance(module, (nn.Conv1d, nn.Conv2d)):
        k = math.prod(module.kernel_size)
        return 2 * out.numel() * (module.in_channels // module.groups) * k
    raise TypeError(f"no FLOPs rule for {type(module).__name__}; known: Linear, Conv1d, Conv2d")


@dataclasses.dataclass(frozen=True)
class LayerFlops:
    """One layer's weights, density and FLOPs of one step on the sample input (sparse and dense)."""

    name: str
    kind: str
    weights: int
    nonzero: int
    dense_grad_weight: bool
    needs_grad_input: bool
    dense_forward: int

    @property
    def density(self) -> float:
        return self.nonzero / self.weights if self.weights else 1.0

    @property
    def sparsity(self) -> float:
        return 1.0 - self.density

    @property
    def forward(self) -> float:
        return self.density * self.dense_forward

    @property
    def grad_input(self) -> float:
        return self.density * self.dense_forward if self.needs_grad_input else 0.0

    @property
    def grad_weight(self) -> float:
        return float(self.dense_forward) if self.dense_grad_weight else self.density * self.dense_forward

    @property
    def train(self) -> float:
        return self.forward + self.grad_input + self.grad_weight

    @property
    def dense_train(self) -> int:
        return self.dense_forward * (3 if self.needs_grad_input else 2)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "weights": self.weights, "sparsity": self.sparsity,
                "dense_grad_weight": self.dense_grad_weight, "dense_forward_flops": self.dense_forward,
                "forward_flops": self.forward, "grad_input_flops": self.grad_input,
                "grad_weight_flops": self.grad_weight, "train_flops": self.train, "dense_train_flops": self.dense_train}


def _dense_grad_weight_default(module: nn.Module) -> bool:
    """True while the layer's weight gradient is dense: AutoSparse with α > 0 (see autosparse.dense_grad_weight)."""
    from .autosparse import dense_grad_weight  # noqa: PLC0415  (same layer; avoids an import cycle)
    return dense_grad_weight(module)


def layer_flops(model: nn.Module, sample_input: Any,
                dense_grad_weight: Callable[[nn.Module], bool] | None = None) -> list[LayerFlops]:
    """Run ``model(sample_input)`` once (eval mode, no parameter change) with forward hooks and return one
    :class:`LayerFlops` per GEMM layer call. The sample input itself is treated as needing no gradient."""
    is_dense = dense_grad_weight or _dense_grad_weight_default
    layers = gemm_layers(model)
    records: list[LayerFlops] = []
    handles = []

    def make_hook(name: str):
        def hook(m, inputs, output):
            w = m.weight.detach()
            records.append(LayerFlops(name=name, kind=type(m).__name__, weights=w.numel(),
                                      nonzero=int(torch.count_nonzero(w)), dense_grad_weight=bool(is_dense(m)),
                                      needs_grad_input=bool(inputs[0].requires_grad),
                                      dense_forward=dense_forward_flops(m, inputs[0], output)))
        return hook

    for n, m in layers:
        handles.append(m.register_forward_hook(make_hook(n or type(m).__name__)))
    was = model.training
    model.eval()
    try:
        with torch.enable_grad():
            x = sample_input.detach() if torch.is_tensor(sample_input) else sample_input
            model(x)
    finally:
        model.train(was)
        for h in handles:
            h.remove()
    return records


def _sum(xs: Iterable[float]) -> float:
    return float(sum(xs))


def sparsity_report(model: nn.Module, sample_input: Any,
                    dense_grad_weight: Callable[[nn.Module], bool] | None = None) -> dict[str, Any]:
    """Sparsity and FLOPs of ``model`` now, against dense (see the module docstring for the counting rules).

    Returns ``{"sparsity": overall fraction of zero GEMM weights, "layer_sparsity": {name: fraction},
    "train_flops_ratio": sparse/dense FLOPs of one training step, "inference_flops_ratio": sparse/dense forward,
    "train_flops", "dense_train_flops", "inference_flops", "dense_inference_flops", "layers": [per layer]}``.
    A layer called several times (weight sharing) counts its FLOPs each time and its weights once."""
    recs = layer_flops(model, sample_input, dense_grad_weight)
    if not recs:
        raise ValueError("sparsity_report: the model called no Linear/Conv1d/Conv2d layer on the sample input")
    uniq = {r.name: r for r in recs}
    weights = sum(r.weights for r in uniq.values())
    nonzero = sum(r.nonzero for r in uniq.values())
    inf, dense_inf = _sum(r.forward for r in recs), _sum(r.dense_forward for r in recs)
    tr, dense_tr = _sum(r.train for r in recs), _sum(r.dense_train for r in recs)
    return {
        "sparsity": 1.0 - nonzero / weights,
        "layer_sparsity": {n: r.sparsity for n, r in uniq.items()},
        "train_flops_ratio": tr / dense_tr,
        "inference_flops_ratio": inf / dense_inf,
        "train_flops": tr, "dense_train_flops": dense_tr, "inference_flops": inf, "dense_inference_flops": dense_inf,
        "layers": [r.to_dict() for r in recs],
    }


def cumulative_train_flops_ratio(reports: Iterable[dict[str, Any]]) -> float:
    """Training FLOPs of a whole run against dense, from one ``sparsity_report`` per epoch (equal steps each):
    Σ train_flops / Σ dense_train_flops."""
    reports = list(reports)
    if not reports:
        raise ValueError("cumulative_train_flops_ratio: no reports")
    return _sum(r["train_flops"] for r in reports) / _sum(r["dense_train_flops"] for r in reports)
