"""Recipes: which format, rounding and scaling every tensor role of training uses (docs/architecture.md).

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
import math
from typing import Any

from ..formats import get_format
from ..formats.base import check_bool
from ..ops.context import OPERAND_CASTS, ROLES, resolve_accumulator
from ..rounding import check_rand_bits, check_rounding

SCALINGS = ("none", "current", "delayed", "per-channel")
LOSS_SCALINGS = ("none", "static", "dynamic", "enhanced")
MAX_MARGIN = 126  # |margin| of a scale 2^-margin: beyond it the scale leaves the float32 range


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
        if not isinstance(self.format, str):
            raise ValueError(f"a tensor spec's format must be a format name, got {self.format!r}")
        get_format(self.format)  # unknown names raise ValueError listing the known ones
        if not isinstance(self.rounding, str):
            raise ValueError(f"rounding must be a rounding mode name, got {self.rounding!r}")
        check_rounding(self.rounding)
        _check_bool("saturate", self.saturate)
        if self.rand_bits is not None:
            check_rand_bits(self.rand_bits)
        if not isinstance(self.scaling, str) or self.scaling not in SCALINGS:
            raise ValueError(f"unknown scaling {self.scaling!r}; valid: {', '.join(SCALINGS)}")
        if isinstance(self.history, bool) or not isinstance(self.history, int) or self.history < 1:
            raise ValueError(f"scaling history must be an integer >= 1, got {self.history!r}")
        if (isinstance(self.margin, bool) or not isinstance(self.margin, (int, float))
                or not math.isfinite(self.margin) or abs(self.margin) > MAX_MARGIN):
            raise ValueError(f"scaling margin must be a finite number in -{MAX_MARGIN}..{MAX_MARGIN} (powers of two), "
                             f"got {self.margin!r}")

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
        if not isinstance(self.kind, str) or self.kind not in LOSS_SCALINGS:
            raise ValueError(f"unknown loss scaling {self.kind!r}; valid: {', '.join(LOSS_SCALINGS)}")
        for f in ("init_scale", "growth_factor", "backoff_factor", "floor", "floor_growth", "max_floor"):
            v = getattr(self, f)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                raise ValueError(f"loss scaling {f} must be a positive finite number, got {v!r}")
        for f in ("growth_interval", "floor_interval"):
            v = getattr(self, f)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"loss scaling {f} must be an integer >= 1, got {v!r}")


def _known_fields(cls, d: dict, what: str) -> None:
    valid = [f.name for f in dataclasses.fields(cls)]
    bad = set(d) - set(valid)
    if bad:
        raise ValueError(f"unknown {what} field(s) {sorted(bad)}; valid: {', '.join(valid)}")


def _check_bool(name: str, v: Any) -> None:
    """Booleans must be booleans: the string "false" is refused (it would be true)."""
    try:
        check_bool(name, v)
    except TypeError as e:
        raise ValueError(str(e)) from None


def check_recipe_name(name: Any) -> str:
    """A recipe name: a non-empty string without control characters (a newline would break tables and files)."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"a recipe name must be a non-empty string, got {name!r}")
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise ValueError(f"a recipe name must not contain control characters (newline, tab, ...), got {name!r}")
    return name


def _str_tuple(field: str, v: Any) -> tuple[str, ...]:
    if isinstance(v, str) or not isinstance(v, (list, tuple)) or not all(isinstance(x, str) for x in v):
        raise ValueError(f"recipe {field} must be a list of strings, got {v!r}")
    return tuple(v)


def _spec(v: Any) -> TensorSpec | None:
    if v is None or isinstance(v, TensorSpec):
        return v
    if isinstance(v, str):
        return TensorSpec(v)
    if isinstance(v, dict):
        _known_fields(TensorSpec, v, "tensor spec")
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
    #: registered techniques "name[:args]" applied by emulate in order (extensions.py), e.g. "ktanh" (tanh, sigmoid,
    #: GELU, SiLU modules by integer-only K-TanH approximations), "pact:4:4", "autosparse:0.8"
    transforms: tuple[str, ...] = ()
    source: str = ""
    notes: str = ""

    def __post_init__(self) -> None:
        check_recipe_name(self.name)
        for f in _SPEC_FIELDS:
            object.__setattr__(self, f, _spec(getattr(self, f)))
        if isinstance(self.loss_scaling, dict):
            _known_fields(LossScaling, self.loss_scaling, "loss scaling")
            object.__setattr__(self, "loss_scaling", LossScaling(**self.loss_scaling))
        if isinstance(self.loss_scaling, str):
            object.__setattr__(self, "loss_scaling", LossScaling(kind=self.loss_scaling))
        if not isinstance(self.loss_scaling, LossScaling):
            raise ValueError(f"loss_scaling must be a kind name, a table or a LossScaling, got {self.loss_scaling!r}")
        for f in ("accumulate", "accumulate_backward"):
            v = getattr(self, f)
            if v is not None and not isinstance(v, str):
                raise ValueError(f"{f} must be a format or accumulator name or None, got {v!r}")
            resolve_accumulator(v)  # unknown names raise ValueError
        h = self.wgrad_hadamard
        if h is not None and (isinstance(h, bool) or not isinstance(h, int) or h < 1 or h & (h - 1)):
            raise ValueError(f"wgrad_hadamard must be a power of two (the RHT block, 16 in TE) or None, got {h!r}")
        s = self.hadamard_seed
        if s is not None and (isinstance(s, bool) or not isinstance(s, int)):
            raise ValueError(f"hadamard_seed must be an int or None, got {s!r}")
        if self.chunk is not None and (isinstance(self.chunk, bool) or not isinstance(self.chunk, int) or self.chunk < 1):
            raise ValueError(f"chunk must be a positive int or None, got {self.chunk!r}")
        _check_bool("exempt_first_last", self.exempt_first_last)
        object.__setattr__(self, "exempt", _str_tuple("exempt", self.exempt))
        object.__setattr__(self, "transforms", _str_tuple("transforms", self.transforms))
        for f in ("source", "notes"):
            if not isinstance(getattr(self, f), str):
                raise ValueError(f"recipe {f} must be a string, got {getattr(self, f)!r}")

    def replace(self, **overrides: Any) -> "Recipe":
        """A new recipe with fields replaced; a dict for a spec field updates that spec's fields. The former field
        ``activations="ktanh"`` is read as the transform entry ``"ktanh"`` put before the recipe's transforms."""
        overrides = _legacy_activations(overrides, self.transforms)
        new = {}
        for k, v in overrides.items():
            if k not in {f.name for f in dataclasses.fields(self)}:
                raise ValueError(f"unknown recipe field {k!r}; valid: {', '.join(f.name for f in dataclasses.fields(self))}")
            cur = getattr(self, k)
            if isinstance(v, dict) and dataclasses.is_dataclass(cur):
                _known_fields(type(cur), v, f"{k}")
                v = dataclasses.replace(cur, **v)
            new[k] = v
        return dataclasses.replace(self, **new)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Recipe":
        """A Recipe from ``to_dict``'s output. Dicts written before K-TanH became a technique carry
        ``activations``: None is dropped, a name becomes the first ``transforms`` entry (``"ktanh"``)."""
        if not isinstance(d, dict):
            raise ValueError(f"a recipe is a JSON object (dict), got {type(d).__name__}")
        d = _legacy_activations(d, ())
        valid = {f.name for f in dataclasses.fields(cls)}
        bad = set(d) - valid
        if bad:
            raise ValueError(f"unknown recipe field(s) {sorted(bad)}; valid: {', '.join(sorted(valid))}")
        return cls(**d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_json(cls, s: str) -> "Recipe":
        """A Recipe from JSON text; malformed or too deeply nested JSON is a one-line ValueError."""
        return cls.from_dict(loads_json(s))


def _legacy_activations(d: dict[str, Any], transforms: tuple[str, ...]) -> dict[str, Any]:
    """``d`` without the former ``activations`` field (K-TanH before it was a technique, ``lowp.techniques.ktanh``):
    None is dropped, a name becomes the first entry of ``transforms`` (``d``'s own, else ``transforms``)."""
    if "activations" not in d:
        return d
    d = dict(d)
    act = d.pop("activations")
    if act is not None:
        if not isinstance(act, str) or not act:
            raise ValueError(f"recipe activations must be a transform name (e.g. 'ktanh') or None, got {act!r}")
        d["transforms"] = (act,) + _str_tuple("transforms", d.get("transforms", transforms))
    return d


def loads_json(s: str | bytes, source: str = "recipe JSON") -> Any:
    """``json.loads`` with one-line ValueErrors: malformed text, and nesting too deep for the parser
    (RecursionError)."""
    try:
        return json.loads(s)
    except RecursionError:
        raise ValueError(f"{source} is nested too deeply") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"malformed {source}: {e}") from None
