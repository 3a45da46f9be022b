"""``lowp.emulate(model, recipe)`` and ``lowp.restore(model)``: the model transform (SPEC §5, architecture.md).

emulate switches every ``nn.Linear``, ``nn.Conv1d``, ``nn.Conv2d`` and ``nn.Embedding`` (exact types; a user
subclass keeps its own forward and is left alone) to its ``lowp.ops`` emulated twin *in place* — same parameter
tensors, same state_dict keys, same hooks — and configures every ``lowp.Matmul`` (attention products). Exempt,
and left plain: the first and last GEMM-like module in registration order (``named_modules``) when
``recipe.exempt_first_last``, and modules whose qualified name matches one of the ``recipe.exempt`` fnmatch
patterns. With ``recipe.nongemm`` set, the outputs of norm and softmax modules (LayerNorm, GroupNorm,
BatchNorm*, Softmax, LogSoftmax) are rounded by a forward hook (straight-through gradient). With
``recipe.activations == "ktanh"`` the K-TanH helper (``lowp.ops.ktanh.replace_activations``) is applied when
installed, then each registered ``recipe.transforms`` entry (``extensions.register_transform``); restore undoes
both (K-TanH modules and every transform registered with an ``undo``). No global state of torch is touched.
"""
from __future__ import annotations

import fnmatch
from typing import Any

from torch import nn

from ..ops.context import OpContext
from ..ops.modules import EMULATED, PLAIN, Matmul
from ..quantize import quantize_ste
from . import extensions
from .library import get_recipe
from .recipe import Recipe

NONGEMM_TYPES = (nn.LayerNorm, nn.GroupNorm, nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.Softmax,
                 nn.LogSoftmax)
_HOOK_ATTR = "_lowp_nongemm_hook"


def _gemm_like(m: nn.Module) -> bool:
    return type(m) in EMULATED or type(m) in PLAIN or isinstance(m, Matmul)


def _nongemm_hook(spec: Any):
    fmt = spec.fmt

    def hook(module, inputs, output):
        return quantize_ste(output, fmt, spec.rounding, saturate=spec.saturate, rand_bits=spec.rand_bits)
    return hook


def emulate(model: nn.Module, recipe: Recipe | str) -> nn.Module:
    """Make ``model`` compute as ``recipe`` (a Recipe, a recipe name or a JSON path) says; returns the model.
    Calling it again on an emulated model first restores it, then applies the new recipe."""
    recipe = get_recipe(recipe)
    restore(model)
    named = [(n, m) for n, m in model.named_modules() if _gemm_like(m)]
    exempt = set()
    if recipe.exempt_first_last and named:
        exempt |= {named[0][0], named[-1][0]}
    for pat in recipe.exempt:
        exempt |= {n for n, _ in named if fnmatch.fnmatchcase(n, pat)}
    for name, m in named:
        if name in exempt:
            continue
        ctx = OpContext(recipe, name=name or type(m).__name__)
        if isinstance(m, Matmul):
            m.lowp_ctx = ctx
        else:
            m.__class__ = EMULATED[type(m)]
            m.lowp_ctx = ctx
    if recipe.nongemm is not None:
        for name, m in model.named_modules():
            if isinstance(m, NONGEMM_TYPES) and not any(fnmatch.fnmatchcase(name, p) for p in recipe.exempt):
                setattr(m, _HOOK_ATTR, m.register_forward_hook(_nongemm_hook(recipe.nongemm)))
    if recipe.activations == "ktanh":
        try:
            from ..ops import ktanh  # noqa: PLC0415  (owned by another module; optional)
        except ImportError as e:  # pragma: no cover - depends on what is installed
            raise ValueError("recipe.activations='ktanh' needs lowp.ops.ktanh, which is not available") from e
        ktanh.replace_activations(model)
    elif recipe.activations is not None:
        raise ValueError(f"unknown recipe.activations {recipe.activations!r}; valid: None, 'ktanh'")
    for entry in recipe.transforms:  # registered by higher layers (extensions.py); not undone by restore
        fn, args = extensions.get_transform(entry)
        out = fn(model, recipe, args)
        model = model if out is None else out
    return model


def restore(model: nn.Module) -> nn.Module:
    """Undo ``emulate``: registered transforms removed (``extensions.UNDO``), K-TanH activations put back, plain
    torch classes again with the same parameters; Matmul modules back to torch.matmul."""
    for undo in extensions.UNDO.values():
        undo(model)
    from ..ops import ktanh

    ktanh.restore_activations(model)
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


def emulated_layers(model: nn.Module) -> dict[str, OpContext]:
    """Qualified name -> OpContext of every emulated module (useful for inspection and tests)."""
    return {n: m.lowp_ctx for n, m in model.named_modules() if getattr(m, "lowp_ctx", None) is not None}
