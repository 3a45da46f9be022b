"""Per-layer sensitivity: how much quantizing one layer alone, under a recipe, moves the loss on a batch.

For each GEMM-like layer L the recipe ``recipe.replace(exempt=<every other layer>, exempt_first_last=False,
nongemm=None)`` is applied with ``lowp.emulate`` to a copy of the model, and the loss on the batch is compared with
the FP32 loss: Δ_L = loss_L − loss_fp32 (forward pass, eval mode). Layers are ranked by |Δ_L|; the suggestion keeps
in higher precision the most sensitive layers, in rank order, until their |Δ| make up ``share`` (default 50%) of
Σ|Δ|, skipping layers with |Δ| ≤ ``tol``·|loss_fp32| (negligible); a layer whose loss is not finite is always kept.
This is the one-at-a-time (first-order, no interaction) estimate the ternary-residual and mixed-precision papers
use to decide where extra precision pays.
"""
from __future__ import annotations

import copy
import dataclasses
import math
from typing import Any, Callable

import torch
from torch import nn


@dataclasses.dataclass(frozen=True)
class LayerSensitivity:
    layer: str
    loss: float
    delta: float


@dataclasses.dataclass(frozen=True)
class SensitivityReport:
    recipe: str
    loss_fp32: float
    loss_all: float
    layers: tuple[LayerSensitivity, ...]  # most sensitive first
    keep_high_precision: tuple[str, ...]

    def table(self) -> str:
        w = max([5] + [len(r.layer) for r in self.layers])
        lines = [f"recipe {self.recipe}: loss fp32 {self.loss_fp32:.6g}, all layers quantized {self.loss_all:.6g}",
                 f"{'layer'.ljust(w)}  loss        delta       keep"]
        for r in self.layers:
            keep = "yes" if r.layer in self.keep_high_precision else ""
            lines.append(f"{r.layer.ljust(w)}  {r.loss:<10.6g}  {r.delta:<+10.4g}  {keep}".rstrip())
        return "\n".join(lines)


def _loss(model: nn.Module, x: Any, y: Any, loss_fn: Callable) -> float:
    model.eval()
    with torch.no_grad():
        out = model(*x) if isinstance(x, tuple) else model(x)
        return float(loss_fn(out, y))


def layer_sensitivity(model: nn.Module, recipe: Any, x: Any, y: Any,
                      loss_fn: Callable = nn.functional.cross_entropy, *, share: float = 0.5,
                      tol: float = 1e-3) -> SensitivityReport:
    """Rank the GEMM-like layers of ``model`` by the loss change of quantizing each alone under ``recipe`` (a
    Recipe or a name) on the batch (x, y); ``model`` itself is not modified."""
    from ..recipes import emulate, get_recipe  # noqa: PLC0415 (analysis reads the recipes layer only when used)
    from ..recipes.emulate import emulated_layers  # noqa: PLC0415

    if not 0 < share <= 1:
        raise ValueError(f"share must be in (0, 1], got {share}")
    rec = get_recipe(recipe)
    base = rec.replace(exempt=(), exempt_first_last=False, nongemm=None)
    probe = emulate(copy.deepcopy(model), base)
    names = list(emulated_layers(probe))
    loss_all = _loss(probe, x, y, loss_fn)
    loss_fp32 = _loss(copy.deepcopy(model), x, y, loss_fn)
    rows = []
    for name in names:
        one = emulate(copy.deepcopy(model), base.replace(exempt=tuple(n for n in names if n != name)))
        lv = _loss(one, x, y, loss_fn)
        rows.append(LayerSensitivity(name, lv, lv - loss_fp32))
    rows.sort(key=lambda r: -abs(r.delta) if math.isfinite(r.delta) else -math.inf)
    total = sum(abs(r.delta) for r in rows if math.isfinite(r.delta))
    thr = tol * max(abs(loss_fp32), 1e-12)
    keep, acc = [], 0.0
    for r in rows:
        if not math.isfinite(r.delta):
            keep.append(r.layer)
            continue
        if abs(r.delta) <= thr or (keep and acc >= share * total):
            break
        keep.append(r.layer)
        acc += abs(r.delta)
    return SensitivityReport(rec.name, loss_fp32, loss_all, tuple(rows), tuple(keep))
