"""WRPN: wide reduced-precision networks (Mishra et al. 2017).

- Activations: clip(x, 0, 1) quantized to k bits: round(x·(2^k − 1)) / (2^k − 1) (``dorefa.unit_clip_act``).
- Weights: clip(w, −1, 1) quantized to a sign plus k − 1 bits of magnitude:
  w_q = round(w_c · m) / m with m = 2^(k−1) − 1, so 2m + 1 = 2^k − 1 levels symmetric around 0 (k ≥ 2).
  Straight-through rounding; the clip passes the gradient inside [−1, 1] and blocks it outside.
- Widening: every layer's channels/features multiplied by a factor F (2×, 3× in the paper) to win back the
  accuracy lost to low precision; ``widen(model, F)`` does it in place for models built from Linear / Conv1d /
  Conv2d (groups = 1) / BatchNorm / LayerNorm: every GEMM-like layer's output width is multiplied except the
  last one's (the model's outputs), every input width except the first one's (the model's inputs), in
  registration order, and norms follow. Parameters keep their identity (``p.data`` is replaced, so an optimizer
  built before widening still holds them) and are re-initialised with the module's own ``reset_parameters``
  (WRPN trains from scratch). A model whose forward hard-codes a width (a reshape to a fixed size) cannot be
  widened this way: give its factory a width argument instead (``widen`` also accepts a factory and returns a
  factory that builds then widens).
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from ..ops.modules import GEMM_TYPES
from .dorefa import check_bits, quantize_k

NORM_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm)


def wrpn_weight(w: torch.Tensor, bits: int) -> torch.Tensor:
    """WRPN weight quantization: clip to [−1, 1], sign plus ``bits`` − 1 magnitude bits (bits ≥ 2)."""
    check_bits("WRPN weight bits", bits, lo=2)
    return quantize_k(torch.clamp(w, -1.0, 1.0), bits - 1)


class WRPNWeight(nn.Module):
    """Weight quantizer module (no parameters): ``forward(w) = wrpn_weight(w, bits)``."""

    def __init__(self, bits: int) -> None:
        super().__init__()
        self.bits = check_bits("WRPN weight bits", bits, lo=2)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return wrpn_weight(w, self.bits)

    def extra_repr(self) -> str:
        return f"bits={self.bits}"


def _set_param(m: nn.Module, name: str, shape: tuple[int, ...]) -> None:
    t = getattr(m, name, None)
    if t is None:
        return
    t.data = torch.empty(shape, dtype=t.dtype, device=t.device)


def _widen_gemm(m: nn.Module, f_in: int, f_out: int) -> None:
    if isinstance(m, nn.Linear):
        m.in_features *= f_in
        m.out_features *= f_out
        _set_param(m, "weight", (m.out_features, m.in_features))
        _set_param(m, "bias", (m.out_features,))
    else:
        if m.groups != 1:
            raise ValueError(f"widen: grouped convolutions are not supported (groups={m.groups})")
        m.in_channels *= f_in
        m.out_channels *= f_out
        _set_param(m, "weight", (m.out_channels, m.in_channels, *m.kernel_size))
        _set_param(m, "bias", (m.out_channels,))
    m.reset_parameters()


def _widen_norm(m: nn.Module, f: int) -> None:
    if isinstance(m, nn.LayerNorm):
        if len(m.normalized_shape) != 1:
            raise ValueError("widen: LayerNorm over more than one dim is not supported")
        m.normalized_shape = (m.normalized_shape[0] * f,)
        shape = m.normalized_shape
    else:
        m.num_features *= f
        shape = (m.num_features,)
        for b in ("running_mean", "running_var"):
            _set_param(m, b, shape)
    _set_param(m, "weight", shape)
    _set_param(m, "bias", shape)
    m.reset_parameters()


def widen(model: "nn.Module | Callable[[], nn.Module]", factor: int) -> "nn.Module | Callable[[], nn.Module]":
    """Multiply the width of every layer of ``model`` by ``factor`` (module docstring); in place for a module
    (returned), or, for a factory, a new factory that builds and widens. factor = 1 leaves the model untouched."""
    check_bits("widening factor", factor, lo=1, hi=64)
    if not isinstance(model, nn.Module):
        if not callable(model):
            raise TypeError(f"widen expects an nn.Module or a model factory, got {type(model).__name__}")

        def factory() -> nn.Module:
            return widen(model(), factor)
        return factory
    if factor == 1:
        return model
    gemms = [m for m in model.modules() if isinstance(m, GEMM_TYPES)]
    if not gemms:
        raise ValueError("widen: the model has no Linear/Conv1d/Conv2d layer")
    for m in model.modules():
        if isinstance(m, nn.Embedding) or (not isinstance(m, GEMM_TYPES + NORM_TYPES)
                                           and any(True for _ in m.parameters(recurse=False))):
            raise ValueError(f"widen: cannot widen a {type(m).__name__} (supported: Linear, Conv1d, Conv2d, "
                             "BatchNorm1d/2d, LayerNorm); give the model factory a width argument instead")
    for i, m in enumerate(gemms):
        _widen_gemm(m, 1 if i == 0 else factor, 1 if i == len(gemms) - 1 else factor)
    for m in model.modules():
        if isinstance(m, NORM_TYPES):
            _widen_norm(m, factor)
    return model
