"""``lowp.emulate(model, recipe)`` and ``lowp.restore(model)``: the model transform (docs/architecture.md).

emulate switches every ``nn.Linear``, ``nn.Conv1d``, ``nn.Conv2d`` and ``nn.Embedding`` of exactly these types to its
``lowp.ops`` emulated twin *in place* — same parameter tensors, same state_dict keys, same hooks — configures every
``lowp.Matmul`` with the recipe's ``attention`` spec, and installs the capture of every other GEMM-like call
(``capture.py``: functional calls, user subclasses, HF ``Conv1D``, SDPA, MultiheadAttention). Exempt, and left
plain: the first and last GEMM-like module in registration order (``named_modules``; a module owning a ≥2-D
``weight`` parameter counts) when ``recipe.exempt_first_last``, and names matching one of the ``recipe.exempt``
fnmatch patterns. With ``recipe.nongemm`` set, the outputs of norm and softmax modules (LayerNorm, GroupNorm,
BatchNorm*, Softmax, LogSoftmax) are rounded by a forward hook (straight-through gradient). Then each
``recipe.transforms`` entry is applied by its registered technique (``extensions.register_technique``; e.g.
``ktanh``, ``pact:4:4``, ``autosparse:0.8``). Atomic: everything that can fail on a bad
recipe fails before the model is touched, and a transform that raises leaves the model restored. TorchScript modules
are refused. restore undoes all of it. No global state of torch is touched.
"""
from __future__ import annotations

import fnmatch
from typing import Any

import torch
from torch import nn

from ..ops.context import OpContext
from ..ops.modules import EMULATED, PLAIN, Matmul
from ..quantize import quantize_ste
from . import extensions
from .capture import AttentionRecipe, CaptureState
from .library import get_recipe
from .recipe import Recipe

NONGEMM_TYPES = (nn.LayerNorm, nn.GroupNorm, nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.Softmax,
                 nn.LogSoftmax)
_HOOK_ATTR = "_lowp_nongemm_hook"
_CAPTURE_ATTR = "_lowp_capture"


def _gemm_like(m: nn.Module) -> bool:
    return type(m) in EMULATED or type(m) in PLAIN or isinstance(m, Matmul)


def _owns_weight(m: nn.Module) -> bool:
    w = m._parameters.get("weight")
    return w is not None and w.dim() >= 2


def _nongemm_hook(spec: Any):
    fmt = spec.fmt

    def hook(module, inputs, output):
        return quantize_ste(output, fmt, spec.rounding, saturate=spec.saturate, rand_bits=spec.rand_bits)
    return hook


def _check_model(model: Any) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"lowp.emulate needs a torch.nn.Module, got {type(model).__name__}")
    for name, m in model.named_modules():
        if isinstance(m, (torch.jit.ScriptModule, torch.jit.RecursiveScriptModule)):
            raise TypeError(f"lowp.emulate cannot emulate TorchScript module {name or '(the model)'!r} "
                            f"({type(m).__name__}): scripted/traced code bypasses Python, so nothing in it would be "
                            "emulated; emulate the eager model, then script it")


def emulate(model: nn.Module, recipe: Recipe | str) -> nn.Module:
    """Make ``model`` compute as ``recipe`` (a Recipe, a recipe name or a JSON path) says; returns the model.
    Calling it again on an emulated model first restores it, then applies the new recipe. Atomic: the recipe and
    every layer's context are built before the model is touched, and a failing transform restores the model."""
    recipe = get_recipe(recipe)
    _check_model(model)
    transforms = [extensions.get_technique(entry) for entry in recipe.transforms]  # unknown names raise here
    named = [(n, m) for n, m in model.named_modules() if _gemm_like(m)]
    edges = [n for n, m in model.named_modules() if _gemm_like(m) or _owns_weight(m)]
    exempt = set()
    if recipe.exempt_first_last and edges:
        exempt |= {edges[0], edges[-1]}
    for pat in recipe.exempt:
        exempt |= {n for n, _ in named if fnmatch.fnmatchcase(n, pat)}
    att = AttentionRecipe(recipe)
    plan = []
    for name, m in named:
        if name in exempt:
            continue
        if isinstance(m, Matmul):
            ctx = None if recipe.attention is None else OpContext(att, name=name or "matmul",
                                                                  recipe_name=recipe.name)
        else:
            ctx = OpContext(recipe, name=name or type(m).__name__)
        plan.append((m, ctx))
    if recipe.nongemm is not None:
        recipe.nongemm.fmt  # noqa: B018  (validates the format before anything changes)
    restore(model)
    try:
        for m, ctx in plan:
            if not isinstance(m, Matmul):
                m.__class__ = EMULATED[type(m)]
            m.lowp_ctx = ctx
        if recipe.nongemm is not None:
            for name, m in model.named_modules():
                if isinstance(m, NONGEMM_TYPES) and not any(fnmatch.fnmatchcase(name, p) for p in recipe.exempt):
                    setattr(m, _HOOK_ATTR, m.register_forward_hook(_nongemm_hook(recipe.nongemm)))
        for technique, args in transforms:  # registered by higher layers (extensions.py)
            out = technique.transform(model, recipe, args)
            model = model if out is None else out
        model.__dict__[_CAPTURE_ATTR] = CaptureState(model, recipe, exempt)
    except BaseException:
        restore(model)
        raise
    return model


def restore(model: nn.Module) -> nn.Module:
    """Undo ``emulate``: capture hooks removed, every registered technique's transform removed (its ``undo``;
    K-TanH activations put back, ...), plain torch classes again with the same parameters; Matmul modules back to
    torch.matmul."""
    state = model.__dict__.pop(_CAPTURE_ATTR, None)
    if state is not None:
        state.remove()
    for technique in list(extensions.TECHNIQUES.values()):
        technique.undo(model)
    for m in model.modules():
        if type(m) in PLAIN:
            m.__class__ = PLAIN[type(m)]
            if "lowp_ctx" in m.__dict__:
                del m.__dict__["lowp_ctx"]
        elif isinstance(m, Matmul):
            m.lowp_ctx = None
        handle = m.__dict__.pop(_HOOK_ATTR, None)
        if handle is not None:
            handle.remove()
    return model


def capture_state(model: nn.Module) -> CaptureState | None:
    """The capture state of an emulated model (None if not emulated)."""
    return model.__dict__.get(_CAPTURE_ATTR)


def emulated_layers(model: nn.Module) -> dict[str, OpContext]:
    """Qualified name -> OpContext of every emulated module, and of every captured call seen so far (useful for
    inspection and tests)."""
    out = {n: m.lowp_ctx for n, m in model.named_modules() if getattr(m, "lowp_ctx", None) is not None}
    state = capture_state(model)
    if state is not None:
        out.update(state.contexts)
    return out


def applied_techniques(model: nn.Module) -> list:
    """The registered techniques ``emulate`` applied to ``model`` (its recipe's ``transforms``, in order, each once);
    empty for a model that is not emulated."""
    state = capture_state(model)
    return extensions.techniques_of(None if state is None else state.recipe)
