"""Magnitude pruning: the baselines for AutoSparse (Kundu et al. 2023; Zhu & Gupta 2017).

A pruned layer's weight is reparametrised (``torch.nn.utils.parametrize``) as W ⊙ M with a 0/1 mask buffer M
(state dict: ``...parametrizations.weight.original`` and ``...parametrizations.weight.0.mask``); masked weights are
exactly zero in the forward and receive no gradient, so (as for AutoSparse with α = 0) the weight-gradient GEMM is
sparse (:mod:`lowp.techniques.flops`).

- :func:`magnitude_prune` — **one-shot**: zero the ``round(sparsity · N)`` weights of smallest |W̃| (W̃ = the current
  effective weight, so pruned weights stay pruned), over all pruned layers at once (``scope="global"``) or in each
  layer (``scope="layer"``); exact counts, ties broken by index.
- :class:`GradualPruner` — **gradual** (Zhu & Gupta 2017): at the start of epoch e prune to
  S(e) = S_f · (1 − (1 − p)³), p = clip((e − start·E) / ((end − start)·E), 0, 1).

Which layers: every Linear/Conv1d/Conv2d (as AutoSparse), minus ``exempt`` fnmatch patterns.
"""
from __future__ import annotations

import dataclasses
import fnmatch

import torch
from torch import nn
from torch.nn.utils import parametrize

from .flops import gemm_layers

SCOPES = ("global", "layer")


class MagnitudeMask(nn.Module):
    """Parametrization W ↦ W ⊙ mask (mask a float 0/1 buffer of W's shape)."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mask", torch.ones_like(weight))

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return w * self.mask


def _mask_param(module: nn.Module) -> MagnitudeMask | None:
    if not parametrize.is_parametrized(module, "weight"):
        return None
    for p in module.parametrizations.weight:
        if isinstance(p, MagnitudeMask):
            return p
    return None


def prunable(model: nn.Module, exempt: tuple[str, ...] = ()) -> list[tuple[str, nn.Module]]:
    """The layers magnitude pruning touches: Linear/Conv1d/Conv2d not matching an ``exempt`` pattern."""
    return [(n, m) for n, m in gemm_layers(model) if not any(fnmatch.fnmatchcase(n, p) for p in exempt)]


def magnitude_masks(weights: dict[str, torch.Tensor], sparsity: float, scope: str = "global") -> dict[str, torch.Tensor]:
    """Boolean keep-masks zeroing exactly ``round(sparsity · N)`` smallest-|w| entries (N = all entries for
    ``global``, each tensor's for ``layer``); ties broken by position (stable sort)."""
    if not 0.0 <= sparsity <= 1.0:
        raise ValueError(f"sparsity must be in [0, 1], got {sparsity!r}")
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {SCOPES}, got {scope!r}")
    if not weights:
        raise ValueError("magnitude_masks: no weights")

    def keep_of(flat: torch.Tensor) -> torch.Tensor:
        k = int(round(sparsity * flat.numel()))
        keep = torch.ones(flat.numel(), dtype=torch.bool, device=flat.device)
        if k:
            order = torch.sort(flat.abs(), stable=True).indices
            keep[order[:k]] = False
        return keep

    if scope == "layer":
        return {n: keep_of(w.detach().reshape(-1)).reshape(w.shape) for n, w in weights.items()}
    flat = torch.cat([w.detach().reshape(-1).float() for w in weights.values()])
    keep = keep_of(flat)
    out, i = {}, 0
    for n, w in weights.items():
        out[n] = keep[i:i + w.numel()].reshape(w.shape)
        i += w.numel()
    return out


def magnitude_prune(model: nn.Module, sparsity: float, scope: str = "global",
                    exempt: tuple[str, ...] = ()) -> dict[str, float]:
    """Prune the model's Linear/Conv weights to ``sparsity`` by magnitude, in place (adding mask parametrizations
    where missing); returns {layer name: its sparsity}."""
    layers = prunable(model, tuple(exempt))
    if not layers:
        raise ValueError("magnitude_prune: no Linear/Conv1d/Conv2d layer to prune")
    for _, m in layers:
        if _mask_param(m) is None:
            parametrize.register_parametrization(m, "weight", MagnitudeMask(m.weight.detach()))
    masks = magnitude_masks({n: m.weight.detach() for n, m in layers}, sparsity, scope)
    out = {}
    for n, m in layers:
        p = _mask_param(m)
        p.mask.copy_(masks[n].to(p.mask.dtype))
        out[n] = 1.0 - float(masks[n].float().mean())
    return out


def remove_masks(model: nn.Module, bake: bool = True) -> nn.Module:
    """Drop the mask parametrizations; ``bake=True`` keeps the pruned weight W ⊙ M."""
    for _, m in model.named_modules():
        if _mask_param(m) is not None:
            parametrize.remove_parametrizations(m, "weight", leave_parametrized=bake)
    return model


def gradual_sparsity(epoch: float, epochs: int, final: float, start: float = 0.0, end: float = 0.75) -> float:
    """Zhu & Gupta's cubic schedule S(e) = S_f·(1 − (1 − p)³), p = clip((e/E − start) / (end − start), 0, 1)."""
    if not 0.0 <= start < end <= 1.0:
        raise ValueError(f"need 0 <= start < end <= 1, got start={start!r}, end={end!r}")
    p = min(1.0, max(0.0, (epoch / epochs - start) / (end - start)))
    return final * (1.0 - (1.0 - p) ** 3)


@dataclasses.dataclass(frozen=True)
class GradualPruner:
    """Gradual magnitude pruning to ``final`` sparsity; call ``on_epoch(model, epoch, epochs)`` at each epoch start
    (epoch 0-based) — it prunes to S(epoch + 1), so the last pruning epoch already trains at the final sparsity."""

    final: float
    start: float = 0.0
    end: float = 0.75
    scope: str = "global"
    exempt: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        gradual_sparsity(0, 1, self.final, self.start, self.end)  # validates
        if not 0.0 <= self.final <= 1.0:
            raise ValueError(f"final sparsity must be in [0, 1], got {self.final!r}")

    def on_epoch(self, model: nn.Module, epoch: int, epochs: int) -> float:
        s = gradual_sparsity(epoch + 1, epochs, self.final, self.start, self.end)
        magnitude_prune(model, s, self.scope, self.exempt)
        return s
