"""Per-layer state of an emulated op: the role specs, the accumulator, and per-tensor scaling state.

``OpContext.quantize(role, x, ...)`` rounds one tensor role exactly once (Recipe semantics, docs/architecture.md):

    scaling "none"         x_q = Q(x)
    scaling "current"      s = (fmt.max / amax(x)) / 2^margin,  x_q = Q(x·s) / s      (per tensor)
    scaling "delayed"      as current, amax = max of the last ``history`` amaxes (Transformer Engine);
                           the first call uses its own amax. The history lives here (not in the state_dict).
    scaling "per-channel"  as current with one amax per slice along the channel axis: dim 0 for weight-like roles
                           (output channel), the channel/feature axis for activations (dim 1 of a conv tensor,
                           the last dim of a linear/matmul/embedding tensor).
amax of 0 or non-finite gives s = 1 (NaN stays NaN). Block formats (MX, DFP with blocks) take their blocks along
the GEMM reduction axis where the op knows it (a conv weight is viewed as (C_out, C_in·kh·kw)).

The context only duck-types its recipe (attributes named after the roles plus ``accumulate`` and ``chunk``), so this
layer does not import ``lowp.recipes``. A spec that is FP32 without scaling is dropped: it is the identity.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import torch

from ..formats import FloatFormat, Format, get_format
from ..formats.block import MXFormat
from ..formats.dfp import DFPFormat
from ..formats import fast
from ..formats.fast import compile_enabled, round_float_dispatch
from ..rounding import check_rand_bits
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
_NATIVE = {"bf16": torch.bfloat16, "fp16": torch.float16}


def _is_identity(spec: Any, fmt: Format) -> bool:
    return isinstance(fmt, FloatFormat) and fmt.is_identity_for_float32 and spec.scaling == "none"


def round_tensor(x: torch.Tensor, fmt: Format, spec: Any) -> torch.Tensor:
    """Q(x) with the spec's rounding, saturation and random bits; fast paths that give the same bits:
    native casts for bf16/fp16 round-to-nearest-even (no saturation), and the compiled float kernel for every
    float32 tensor of a FloatFormat (its per-call cost is ~40 us against ~250 us for the eager kernel)."""
    if isinstance(fmt, FloatFormat) and x.dtype == torch.float32:
        native = _NATIVE.get(fmt.name)
        if native is not None and spec.rounding == "nearest" and not spec.saturate:
            return x.to(native).to(torch.float32)
        force = "compiled" if compile_enabled() else "eager"
        return round_float_dispatch(x.contiguous(), fmt.kernel_params(torch.float32), spec.rounding,
                                    bool(spec.saturate), check_rand_bits(spec.rand_bits), None, None, force=force)
    return fmt.quantize(x, spec.rounding, saturate=spec.saturate, rand_bits=spec.rand_bits)


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


def _blockish(fmt: Format) -> bool:
    """Formats whose scales run along an axis the op chooses (its GEMM's reduction axis): MX, block DFP, and any
    format dataclass with an ``axis`` field (row/block-scaled formats)."""
    if isinstance(fmt, MXFormat) or (isinstance(fmt, DFPFormat) and fmt.block is not None):
        return True
    return dataclasses.is_dataclass(fmt) and any(f.name == "axis" for f in dataclasses.fields(fmt)) and \
        not isinstance(fmt, DFPFormat)


class OpContext:
    """What one emulated layer needs: resolved role specs and formats, accumulator, scaling state, its name."""

    def __init__(self, recipe: Any, name: str = "", recipe_name: str | None = None) -> None:
        self.name = name
        self.recipe_name = recipe_name if recipe_name is not None else getattr(recipe, "name", "custom")
        self.specs: dict[str, Any] = {}
        self.formats: dict[str, Format] = {}
        self.high_precision: set[str] = set()  # operand casts explicitly kept in FP32
        for role in ALL_ROLES:
            spec = getattr(recipe, role, None)
            if spec is None:
                continue
            fmt = get_format(spec.format)
            if _is_identity(spec, fmt):
                if role in OPERAND_CASTS:
                    self.high_precision.add(role)
                continue
            if spec.scaling != "none" and getattr(fmt, "max", None) is None:
                raise ValueError(f"role {role!r}: scaling {spec.scaling!r} needs a format with a finite max; "
                                 f"{spec.format!r} has none (scaled/block formats carry their own scale)")
            self.specs[role], self.formats[role] = spec, fmt
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
        self._delayed: dict[str, Any] = {}
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
        if _blockish(fmt):
            key = (role, axis)
            if key not in self._axis_fmt:
                self._axis_fmt[key] = dataclasses.replace(fmt, axis=axis)
            return self._axis_fmt[key]
        return fmt

    def _scale(self, role: str, spec: Any, fmt: Format, x: torch.Tensor, chan_axis: int) -> torch.Tensor:
        from .. import scaling

        if spec.scaling == "current":
            return scaling.current_scale(x, fmt, spec.margin)
        if spec.scaling == "delayed":
            sc = self._delayed.get(role)
            if sc is None:
                sc = self._delayed[role] = scaling.DelayedScaler(spec.history, spec.margin)
            return sc.scale(x, fmt)
        # per-channel: amax over every dim but chan_axis, kept for broadcasting
        ax = chan_axis % x.dim()
        dims = [d for d in range(x.dim()) if d != ax]
        a = x.detach().abs().amax(dim=dims, keepdim=True) if dims else x.detach().abs()
        return scaling.amax_scale(a, fmt.max, spec.margin)

    @torch.no_grad()
    def quantize(self, role: str, x: torch.Tensor, chan_axis: int = -1, block_axis: int = -1,
                 flatten: bool = False) -> torch.Tensor:
        """Round ``x`` as ``role`` (identity if the role is not set). ``flatten`` views x as (shape[0], -1) for
        block formats (conv weights: blocks along C_in·kh·kw)."""
        spec = self.specs.get(role)
        if spec is None:
            return x
        fmt = self.formats[role]
        if x.dtype != torch.float32 and x.dtype not in (torch.float64, torch.float16, torch.bfloat16):
            raise TypeError(f"emulated op {self.name!r}: role {role!r} got dtype {x.dtype}")
        if _blockish(fmt):
            shape = x.shape
            if flatten and x.dim() > 2:
                x2, ax = x.reshape(shape[0], -1), -1
            else:
                x2, ax = x, block_axis
            q = round_tensor(x2, self._block_fmt(role, fmt, ax), spec).reshape(shape)
            if observe.OBSERVERS:
                observe.notify(self.name, role, x, q, fmt)
            return q
        if spec.scaling == "none":
            q = round_tensor(x, fmt, spec)
            if observe.OBSERVERS:
                observe.notify(self.name, role, x, q, fmt)
            return q
        if (not observe.OBSERVERS and isinstance(fmt, FloatFormat) and x.dtype == torch.float32
                and spec.scaling in ("current", "delayed") and compile_enabled() and x.numel() < fast.MAX_NUMEL):
            # fused: one compiled amax pass and one compiled pass for Q(x·s)/s (the same bits as below)
            s = (fast.current_scale_f32(x, fmt.max, spec.margin) if spec.scaling == "current"
                 else self._scale(role, spec, fmt, x, chan_axis).to(torch.float32))
            return fast.scaled_round_float(x.contiguous(), fmt.kernel_params(torch.float32), spec.rounding,
                                           bool(spec.saturate), check_rand_bits(spec.rand_bits), None, s)
        s = self._scale(role, spec, fmt, x, chan_axis).to(x.dtype)
        xs = x * s
        q = round_tensor(xs, fmt, spec)
        if observe.OBSERVERS:
            observe.notify(self.name, role, xs, q, fmt)
        return q / s  # not in place: observers may keep q

    def __repr__(self) -> str:
        return f"OpContext(name={self.name!r}, recipe={self.recipe_name}, roles={list(self.specs)})"
