"""The GEMMs of a model and their accumulation lengths (Sakr et al. 2019), found by running one sample
input with forward hooks on Linear / Conv1d / Conv2d (and their lowp emulated subclasses):

* forward        n = k·C_in/groups     (k = kernel elements: kh·kw, or 1 for Linear)  — y = W·x
* backward       n = k·C_out/groups    — grad_input = Wᵀ·grad_output
* weight grad    n = batch·H_out·W_out (Linear: every leading position of the input) — grad_W = grad_outputᵀ·x
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
from torch import nn

from ..ops.modules import GEMM_TYPES
from .vrr import min_accumulator_bits

PASSES = ("forward", "backward", "weight_grad")


@dataclasses.dataclass(frozen=True)
class GemmShape:
    layer: str
    kind: str
    forward: int
    backward: int
    weight_grad: int

    def lengths(self) -> dict[str, int]:
        return {p: getattr(self, p) for p in PASSES}


def gemm_shapes(model: nn.Module, sample: Any) -> list[GemmShape]:
    """Accumulation lengths of every Linear/Conv1d/Conv2d GEMM of ``model`` on ``sample`` (a tensor or a tuple of
    positional inputs), in call order (a module called twice is listed once, with its first call)."""
    out: dict[str, GemmShape] = {}
    hooks = []

    def hook(name: str):
        def f(m: nn.Module, args: tuple, y: torch.Tensor) -> None:
            if name in out:
                return
            x = args[0]
            if isinstance(m, nn.Linear):
                pos = x.numel() // max(x.shape[-1], 1)
                out[name] = GemmShape(name, "Linear", m.in_features, m.out_features, pos)
            else:
                k = math.prod(m.kernel_size)
                g = m.groups
                pos = y.shape[0] * math.prod(y.shape[2:]) if y.dim() > 2 else math.prod(y.shape[1:])
                out[name] = GemmShape(name, type(m).__name__, k * m.in_channels // g, k * m.out_channels // g, pos)
        return f

    for name, m in model.named_modules():
        if isinstance(m, GEMM_TYPES):
            hooks.append(m.register_forward_hook(hook(name or type(m).__name__)))
    was = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(*sample) if isinstance(sample, tuple) else model(sample)
    finally:
        model.train(was)
        for h in hooks:
            h.remove()
    return list(out.values())


def model_accum_bits(model: nn.Module, sample: Any, m_p: int, chunk: int | None = None,
                     **criterion: Any) -> list[dict]:
    """Per GEMM and pass: the length n and the minimum accumulator mantissa bits, sequential and (if ``chunk``)
    chunked. ``criterion`` is passed to ``min_accumulator_bits`` (criterion, cutoff, eps)."""
    rows = []
    for g in gemm_shapes(model, sample):
        for p, n in g.lengths().items():
            row = {"layer": g.layer, "kind": g.kind, "pass": p, "n": n,
                   "min_acc_bits": min_accumulator_bits(n, m_p, **criterion)}
            if chunk:
                row["min_acc_bits_chunked"] = min_accumulator_bits(n, m_p, chunk, **criterion)
            rows.append(row)
    return rows
