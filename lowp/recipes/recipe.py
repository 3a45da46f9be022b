"""Recipes: which format, rounding and scaling every tensor role of training uses (SPEC §5).

Roles of a GEMM-like op y = f(x, w): forward ``input`` (x), ``weight`` (w), ``output`` (y); backward
``grad_output`` (the error dy), ``grad_input`` (dx) and ``grad_weight`` (dw); optionally a cast of their own for the
operands of the dgrad and wgrad GEMMs (``weight_dgrad``, ``input_wgrad``, ``grad_output_wgrad``, with a random
Hadamard rotation of the wgrad operands) and the ``bias``. Plus the GEMM accumulator (``accumulate``: a format
or a tensor-core model such as ``tc14-p128``, ``chunk``, ``accumulate_backward``), ``master`` weights and ``optim_state`` (momentum / Adam moments),
``nongemm`` (optional rounding of norm/softmax/residual outputs), ``attention`` (the operands of products with no
weight operand: q·kᵀ, P·v), ``loss_scaling`` and exempt layers.
A role set to None stays in FP32. Recipes are frozen, JSON round-trippable and derived with ``replace``.
"""
from __future__ import annotations

import dataclasses
import json
from typing import Any

from ..formats import get_format
from ..ops.context import OPERAND_CASTS, ROLES, resolve_accumulator
from ..rounding import check_rand_bits, check_rounding

SCALINGS = ("none", "current", "delayed", "per-channel")
LOSS_SCALINGS = ("none", "static", "dynamic", "enhanced")


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    """How one tensor role is represented: format name, rounding, saturation and scaling.

    scaling: "none"; "current" (per-tensor scale from this tensor's amax); "delayed" (amax history of ``history``
    steps, as Transformer Engine); "per-channel". Scale = (format max / amax) / 2^margin.
    """

    format: str
    rounding: str = "nearest"
    saturate: bool = False
    rand_bits: int | None = None
    scaling: str = "none"
    history: int = 16
    margin: int = 0

    def __post_init__(self) -> None:
        get_format(self.format)  # unknown names raise ValueError listing the known ones
        check_rounding(self.rounding)
        if self.rand_bits is not None:
            check_rand_bits(self.rand_bits)
        if self.scaling not in SCALINGS:
            raise ValueError(f"unknown scaling {self.scaling!r}; valid: {', '.join(SCALINGS)}")
        if self.history < 1:
            raise ValueError(f"scaling history must be >= 1, got {self.history}")

    @property
    def fmt(self):
        return get_format(self.format)


@dataclasses.dataclass(frozen=True)
class LossScaling:
    """Loss scaling (Micikevicius'18; Mellempudi'19 "enhanced").

    static: multiply the loss by ``init_scale``. dynamic: on Inf/NaN gradients skip the step and multiply the scale
    by ``backoff_factor``; after ``growth_interval`` clean steps multiply it by ``growth_factor``. enhanced: dynamic,
    but the scale never drops below a floor that starts at ``floor`` and is multiplied by ``floor_growth`` every
    ``floor_interval`` steps up to ``max_floor`` (the paper's exact schedule is not in its abstract; this default
    is our reconstruction), so spurious overflows cannot collapse the scale.
    """

    kind: str = "none"
    init_scale: float = 2.0**16
    growth_factor: float = 2.0
    backoff_factor: float = 0.5
    growth_interval: int = 2000
    floor: float = 1.0
    floor_growth: float = 2.0
    floor_interval: int = 1000
    max_floor: float = 2.0**16

    def __post_init__(self) -> None:
        if self.kind not in LOSS_SCALINGS:
            raise ValueError(f"unknown loss scaling {self.kind!r}; valid: {', '.join(LOSS_SCALINGS)}")


def _spec(v: Any) -> TensorSpec | None:
    if v is None or isinstance(v, TensorSpec):
        return v
    if isinstance(v, str):
        return TensorSpec(v)
    if isinstance(v, dict):
        return TensorSpec(**v)
    raise TypeError(f"a tensor spec is a format name, a dict or a TensorSpec, got {v!r}")


_SPEC_FIELDS = ROLES + OPERAND_CASTS + ("bias", "attention", "master", "optim_state", "nongemm")


@dataclasses.dataclass(frozen=True)
class Recipe:
    """A complete reduced-precision training recipe. Strings and dicts are accepted for specs."""

    name: str = "custom"
    input: TensorSpec | None = None
    weight: TensorSpec | None = None
    output: TensorSpec | None = None
    grad_output: TensorSpec | None = None
    grad_input: TensorSpec | None = None
    grad_weight: TensorSpec | None = None
    accumulate: str | None = None
    chunk: int | None = None
    master: TensorSpec | None = None
    optim_state: TensorSpec | None = None
    nongemm: TensorSpec | None = None
    #: per-GEMM operand casts (see lowp.ops.context.OPERAND_CASTS): w for dgrad, x and dy for wgrad, each quantized
    #: from the high-precision tensor along that GEMM's reduction axis; None reuses the other GEMM's copy
    weight_dgrad: TensorSpec | None = None
    input_wgrad: TensorSpec | None = None
    grad_output_wgrad: TensorSpec | None = None
    #: accumulator of the dgrad and wgrad GEMMs when it differs from ``accumulate`` (None: the same; "fp32")
    accumulate_backward: str | None = None
    #: random Hadamard transform of both wgrad operands along the token axis before their casts (block length,
    #: 16 in TE's NVFP4 recipe; None: off), signs from ``hadamard_seed`` (None: TE's fixed signs)
    wgrad_hadamard: int | None = None
    hadamard_seed: int | None = None
    #: the bias, rounded before it is added, and its gradient (a native BF16 GEMM adds a BF16 bias); None: FP32
    bias: TensorSpec | None = None
    #: operands of activation×activation products (attention q·kᵀ, the probabilities P and v of p·v, any matmul
    #: with no weight operand): None keeps them in high precision (Transformer Engine's and torchao's default)
    attention: TensorSpec | None = None
    loss_scaling: LossScaling = LossScaling()
    exempt_first_last: bool = False
    exempt: tuple[str, ...] = ()
    activations: str | None = None  # e.g. "ktanh": replace tanh/sigmoid/GELU by integer-only approximations
    transforms: tuple[str, ...] = ()  # registered model transforms "name[:args]" applied by emulate (extensions.py)
    source: str = ""
    notes: str = ""

    def __post_init__(self) -> None:
        for f in _SPEC_FIELDS:
            object.__setattr__(self, f, _spec(getattr(self, f)))
        if isinstance(self.loss_scaling, dict):
            object.__setattr__(self, "loss_scaling", LossScaling(**self.loss_scaling))
        if isinstance(self.loss_scaling, str):
            object.__setattr__(self, "loss_scaling", LossScaling(kind=self.loss_scaling))
        for f in ("accumulate", "accumulate_backward"):
            resolve_accumulator(getattr(self, f))  # unknown names raise ValueError
        h = self.wgrad_hadamard
        if h is not None and (isinstance(h, bool) or not isinstance(h, int) or h < 1 or h & (h - 1)):
            raise ValueError(f"wgrad_hadamard must be a power of two (the RHT block, 16 in TE) or None, got {h!r}")
        if self.chunk is not None and (isinstance(self.chunk, bool) or not isinstance(self.chunk, int) or self.chunk < 1):
            raise ValueError(f"chunk must be a positive int or None, got {self.chunk!r}")
        object.__setattr__(self, "exempt", tuple(self.exempt))
        object.__setattr__(self, "transforms", tuple(self.transforms))

    def replace(self, **overrides: Any) -> "Recipe":
        """A new recipe with fields replaced; a dict for a spec field updates that spec's fields."""
        new = {}
        for k, v in overrides.items():
            if k not in {f.name for f in dataclasses.fields(self)}:
                raise ValueError(f"unknown recipe field {k!r}; valid: {', '.join(f.name for f in dataclasses.fields(self))}")
            cur = getattr(self, k)
            if isinstance(v, dict) and dataclasses.is_dataclass(cur):
                v = dataclasses.replace(cur, **v)
            new[k] = v
        return dataclasses.replace(self, **new)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Recipe":
        valid = {f.name for f in dataclasses.fields(cls)}
        bad = set(d) - valid
        if bad:
            raise ValueError(f"unknown recipe field(s) {sorted(bad)}; valid: {', '.join(sorted(valid))}")
        return cls(**d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_json(cls, s: str) -> "Recipe":
        return cls.from_dict(json.loads(s))
