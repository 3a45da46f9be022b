"""Per-layer state of an emulated op: the role specs, the accumulator, and one scaled quantizer per role.

``OpContext.quantize(role, x, ...)`` rounds one tensor role exactly once with the role's ``ScaledQuantizer``
(``lowp/scaled_quantizer.py``: none, current, delayed or per-channel scaling; a delayed role's amax history lives
in its quantizer, not in the state_dict). Per-channel scaling takes one amax per slice along the channel axis:
dim 0 for weight-like roles (output channel), the channel/feature axis for activations (dim 1 of a conv tensor,
the last dim of a linear/matmul/embedding tensor). Block formats (MX, DFP with blocks) take their blocks along
the GEMM reduction axis where the op knows it (a conv weight is viewed as (C_out, C_in·kh·kw)).

The context only duck-types its recipe (attributes named after the roles plus ``accumulate`` and ``chunk``), so this
layer does not import ``lowp.recipes``. A spec that is FP32 without scaling is dropped: it is the identity.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import torch

from ..formats import FloatFormat, Format, get_format, layout
from ..scaled_quantizer import ScaledQuantizer, quantize_pair
from . import observe

#: the tensor roles of a GEMM-like op y = f(x, w) + b (forward x, w, y; backward dy, dx, dw)
ROLES = ("input", "weight", "output", "grad_output", "grad_input", "grad_weight")
#: per-GEMM operand casts (docs/accelerator-recipes.md, Transformer Engine's rowwise/columnwise copies): the operand of the dgrad or
#: wgrad GEMM quantized again from the high-precision tensor, along that GEMM's reduction axis. Unset: the GEMM
#: reuses the tensor quantized for the other GEMM (input/weight from forward, grad_output from dgrad). An FP32 spec
#: means "this GEMM's operand in high precision".
OPERAND_CASTS = ("weight_dgrad", "input_wgrad", "grad_output_wgrad")
#: every role a recipe can set on an op (``bias``: the bias rounded before it is added, as a native BF16 GEMM does)
ALL_ROLES = ROLES + OPERAND_CASTS + ("bias",)


def _is_identity(spec: Any, fmt: Format) -> bool:
    return isinstance(fmt, FloatFormat) and fmt.is_identity_for_float32 and spec.scaling == "none"


def resolve_accumulator(name: Any) -> Any:
    """None or "fp32": FP32 (torch's GEMM); a tensor-core model name ("tc14-p128") or instance; else a format."""
    if name is None:
        return None
    from .tensor_core import TensorCoreAccumulator, get_accumulator

    if isinstance(name, TensorCoreAccumulator) or (isinstance(name, str) and name.strip().lower().startswith("tc")):
        return get_accumulator(name)
    if isinstance(name, str) and name.strip().lower() == "fp32":
        return None
    return get_format(name)


def _transposed_axis(x: torch.Tensor, axis: int) -> int | None:
    """For x a transpose of the last two dims of a contiguous tensor and ``axis`` one of those two dims: the same
    axis in that tensor (-1 <-> -2); else None."""
    if x.dim() < 2 or x.is_contiguous() or not x.transpose(-1, -2).is_contiguous():
        return None
    a = axis % x.dim() - x.dim()
    return {-1: -2, -2: -1}.get(a)


class OpContext:
    """What one emulated layer needs: resolved role specs and formats, accumulator, scaling state, its name."""

    def __init__(self, recipe: Any, name: str = "", recipe_name: str | None = None) -> None:
        self.name = name
        self.recipe_name = recipe_name if recipe_name is not None else getattr(recipe, "name", "custom")
        self.specs: dict[str, Any] = {}
        self.high_precision: set[str] = set()  # operand casts explicitly kept in FP32
        self.quantizers: dict[str, ScaledQuantizer] = {}
        for role in ALL_ROLES:
            spec = getattr(recipe, role, None)
            if spec is None:
                continue
            fmt = get_format(spec.format)
            if _is_identity(spec, fmt):
                if role in OPERAND_CASTS:
                    self.high_precision.add(role)
                continue
            try:
                self.quantizers[role] = ScaledQuantizer.from_spec(spec)
            except ValueError as e:
                raise ValueError(f"role {role!r}: {e}") from None
            self.specs[role] = spec
        acc = getattr(recipe, "accumulate", None)
        self.accumulate: Any = resolve_accumulator(acc)
        bwd = getattr(recipe, "accumulate_backward", None)
        self.accumulate_bwd: Any = self.accumulate if bwd is None else resolve_accumulator(bwd)
        self.chunk: int | None = getattr(recipe, "chunk", None)
        self.plain = self.accumulate is None and self.accumulate_bwd is None  # torch's own GEMMs
        h = getattr(recipe, "wgrad_hadamard", None)
        self.rht = None
        if h is not None:
            from ..formats.hadamard import RandomHadamard

            if not all(self.cast_set(r) for r in ("input_wgrad", "grad_output_wgrad")):
                raise ValueError("wgrad_hadamard rotates the wgrad operands: the recipe must set input_wgrad and "
                                 "grad_output_wgrad (their casts are taken after the rotation)")
            self.rht = RandomHadamard(h, getattr(recipe, "hadamard_seed", None))
        self._axis_fmt: dict[tuple[str, int], Format] = {}

    def has(self, role: str) -> bool:
        return role in self.specs

    @property
    def per_gemm(self) -> bool:
        """Whether some dgrad/wgrad operand has a cast of its own (then the op saves high-precision operands)."""
        return bool(self.high_precision) or any(r in self.specs for r in OPERAND_CASTS)

    def cast_set(self, role: str) -> bool:
        """An operand cast that is set (to a format, or explicitly to FP32)."""
        return role in self.specs or role in self.high_precision

    def _block_fmt(self, role: str, fmt: Format, axis: int) -> Format:
        if fmt.info.oriented:
            key = (role, axis)
            if key not in self._axis_fmt:
                self._axis_fmt[key] = dataclasses.replace(fmt, axis=axis)
            return self._axis_fmt[key]
        return fmt

    @torch.no_grad()
    def quantize(self, role: str, x: torch.Tensor, chan_axis: int = -1, block_axis: int = -1,
                 flatten: bool = False) -> torch.Tensor:
        """Round ``x`` as ``role`` (identity if the role is not set). ``flatten`` views x as (shape[0], -1) for
        block formats (conv weights: blocks along C_in·kh·kw)."""
        quantizer = self.quantizers.get(role)
        if quantizer is None:
            return x
        if x.dtype != torch.float32 and x.dtype not in (torch.float64, torch.float16, torch.bfloat16):
            raise TypeError(f"emulated op {self.name!r}: role {role!r} got dtype {x.dtype}")
        fmt = quantizer.fmt
        if fmt.info.oriented:
            shape = x.shape
            if flatten and x.dim() > 2:
                x2, ax = x.reshape(shape[0], -1), -1
            else:
                x2, ax = x, block_axis
            in_place = getattr(fmt, "rounds_in_place", None)
            if in_place is not None and in_place(x2, ax, quantizer.rounding):
                # rounded where the elements lie: blocks along any axis (MX: ``mx_compiled.quantize_along``; NVFP4;
                # FP8 blockwise), square tiles (the format's ``rounds_in_place``)
                q = quantizer.round(x2, fmt=self._block_fmt(role, fmt, ax)).reshape(shape)
            elif (in_place is not None and (tax := _transposed_axis(x2, ax)) is not None
                  and in_place(x2.transpose(-1, -2), tax, quantizer.rounding)):
                # a transposed contiguous tensor (Wᵀ) blocked along one of its last two axes: rounded on the
                # contiguous tensor along the same axis, which moved last is the same layout (same blocks, same
                # random bits), or in square tiles, which are the same sets of elements (to nearest: the format
                # says so); its transpose is the result, a view
                q = quantizer.round(x2.transpose(-1, -2), fmt=self._block_fmt(role, fmt, tax))
                q = q.transpose(-1, -2).reshape(shape)
            elif fmt.info.block is not None and len(fmt.info.block) == 1 and x2.dim() >= 2:
                # 1-D blocks: rounded along the last axis of a contiguous copy with the block axis last (the layout
                # the format builds itself, so the same blocks and random bits); the result in x's order is a view
                # for a matrix (the GEMM takes it strided), a copy beyond (flattened to rows for the weight
                # gradient); both copies are the compiled transposition where they can be (layout.py)
                q = quantizer.round(layout.axis_last(x2, ax), fmt=self._block_fmt(role, fmt, -1))
                q = q.movedim(-1, ax % x2.dim())
                q = (layout.contiguous(q) if q.dim() > 2 else q).reshape(shape)
            else:
                q = quantizer.round(x2, fmt=self._block_fmt(role, fmt, ax)).reshape(shape)
            if observe.OBSERVERS:
                observe.notify(self.name, role, x, q, fmt)
            return q
        seen = (lambda xs, q: observe.notify(self.name, role, xs, q, fmt)) if observe.OBSERVERS else None
        return quantizer(x, chan_axis, observe=seen)

    @torch.no_grad()
    def quantize_pair(self, role_a: str, a: torch.Tensor, axes_a: tuple, role_b: str, b: torch.Tensor,
                      axes_b: tuple) -> tuple[torch.Tensor, torch.Tensor]:
        """``(quantize(role_a, a, *axes_a), quantize(role_b, b, *axes_b))``, in one compiled call where both roles
        take their quantizer's one-graph short path (``scaled_quantizer.quantize_pair``; the same bits). Axes are
        (chan_axis, block_axis, flatten)."""
        qa, qb = self.quantizers.get(role_a), self.quantizers.get(role_b)
        if qa is not None and qb is not None and not observe.OBSERVERS:
            pair = quantize_pair(qa, a, qb, b)
            if pair is not None:
                return pair
        return self.quantize(role_a, a, *axes_a), self.quantize(role_b, b, *axes_b)

    def __repr__(self) -> str:
        return f"OpContext(name={self.name!r}, recipe={self.recipe_name}, roles={list(self.specs)})"
