"""Emulated modules: torch's Linear/Conv1d/Conv2d/Embedding subclasses whose forward calls the emulated ops, and
``Matmul``, the module a user's model calls for attention products (``self.matmul(q, k.transpose(-1, -2))``).

``lowp.emulate`` turns a plain module into its emulated twin by switching its class in place and attaching an
``OpContext`` (attribute ``lowp_ctx``): the parameters are the same tensors, state_dict keys and hooks are
unchanged, ``isinstance(m, nn.Linear)`` still holds, and ``lowp.restore`` switches the class back.
A ``Matmul`` with no context (never emulated, restored, or exempt) is plain ``torch.matmul``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .context import OpContext
from .functions import (emulated_conv1d, emulated_conv2d, emulated_embedding, emulated_linear,
                        emulated_matmul)


#: the module types whose forward is one GEMM-like op with a weight (what layer-wise techniques and counters visit)
GEMM_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d)


def _tag(ctx: OpContext | None) -> str:
    return "" if ctx is None else f", recipe={ctx.recipe_name}"


class EmulatedLinear(nn.Linear):
    lowp_ctx: OpContext

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return emulated_linear(x, self.weight, self.bias, self.lowp_ctx)

    def extra_repr(self) -> str:
        return super().extra_repr() + _tag(self.lowp_ctx)


class _EmulatedConv:
    lowp_ctx: OpContext

    def _pad(self, x):
        if self.padding_mode != "zeros":
            return F.pad(x, self._reversed_padding_repeated_twice, mode=self.padding_mode), 0
        if isinstance(self.padding, str):
            if self.lowp_ctx.plain:
                return x, self.padding
            return F.pad(x, self._reversed_padding_repeated_twice), 0
        return x, self.padding

    def extra_repr(self) -> str:
        return super().extra_repr() + _tag(self.lowp_ctx)  # type: ignore[misc]


class EmulatedConv1d(_EmulatedConv, nn.Conv1d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, pad = self._pad(x)
        return emulated_conv1d(x, self.weight, self.bias, self.lowp_ctx, self.stride, pad, self.dilation,
                               self.groups)


class EmulatedConv2d(_EmulatedConv, nn.Conv2d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, pad = self._pad(x)
        return emulated_conv2d(x, self.weight, self.bias, self.lowp_ctx, self.stride, pad, self.dilation,
                               self.groups)


class EmulatedEmbedding(nn.Embedding):
    lowp_ctx: OpContext

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return emulated_embedding(idx, self.weight, self.lowp_ctx, self.padding_idx, self.max_norm,
                                  self.norm_type, self.scale_grad_by_freq, self.sparse)

    def extra_repr(self) -> str:
        return super().extra_repr() + _tag(self.lowp_ctx)


class Matmul(nn.Module):
    """``a @ b`` as a module so that ``lowp.emulate`` can configure it (attention q·kᵀ and p·v).

    Convention: ``a`` takes the recipe's ``input`` role and ``b`` its ``weight`` role (their gradients
    ``grad_input`` / ``grad_weight``); the product is the ``output`` role. Batched like ``torch.matmul``.
    """

    def __init__(self) -> None:
        super().__init__()
        self.lowp_ctx: OpContext | None = None

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if self.lowp_ctx is None:
            return torch.matmul(a, b)
        return emulated_matmul(a, b, self.lowp_ctx)

    def extra_repr(self) -> str:
        return _tag(self.lowp_ctx).lstrip(", ")


#: plain class -> emulated class (exact types only: a user subclass may have its own forward)
EMULATED = {nn.Linear: EmulatedLinear, nn.Conv1d: EmulatedConv1d, nn.Conv2d: EmulatedConv2d,
            nn.Embedding: EmulatedEmbedding}
PLAIN = {v: k for k, v in EMULATED.items()}
