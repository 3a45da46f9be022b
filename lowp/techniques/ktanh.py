"""The ``ktanh`` technique: every nn.Tanh, nn.Sigmoid, nn.GELU and nn.SiLU module of the model computed by K-TanH's
integer-only approximations (Kundu et al. 2019, "K-TanH: Efficient TanH for Deep Learning"; the kernels are
``lowp.ops.ktanh``). Transform entry ``ktanh[:TABLE]`` in ``recipe.transforms`` (TABLE ``max``, the default, or
``mean``: the fitted tables of ``lowp/ops/ktanh_table.json``); ``lowp.restore`` puts the original modules back.
Recipe dicts written before this was a technique (``"activations": "ktanh"``) load as ``transforms ("ktanh",)``.
"""
from __future__ import annotations

from torch import nn

from ..ops import ktanh as K
from ..recipes import extensions
from ..recipes.technique import Technique


class KTanhTechnique(Technique):
    name = "ktanh"

    def transform(self, model: nn.Module, recipe, args: str | None) -> nn.Module:
        table = args or "max"
        if table not in K.TABLES:
            raise ValueError(f"ktanh transform: unknown table {table!r}; valid: {', '.join(K.TABLES)}")
        return K.replace_activations(model, table)

    def undo(self, model: nn.Module) -> None:
        K.restore_activations(model)


extensions.register_technique(KTanhTechnique())
