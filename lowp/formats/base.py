"""The Format interface: what values exist (``info``), and how a tensor is mapped onto them (``quantize``).

Every format class registers itself by class name (``FORMAT_KINDS``), so ``to_dict``/``format_from_dict`` round-trip
any format without a class list."""
from __future__ import annotations

import abc
import dataclasses
import math
from typing import Any

import torch

from ..rounding import check_rand_bits, check_rounding

FLOAT_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
#: every concrete Format class by name (filled as classes are defined)
FORMAT_KINDS: dict[str, type] = {}
SPECIALS = ("ieee", "fn", "fnuz", "none")


@dataclasses.dataclass(frozen=True)
class FormatInfo:
    """What other layers may ask of any format, typed (instead of probing attributes).

    bits           bits per stored element (a block's shared scale not included: see ``bits_per_element``)
    max            largest finite magnitude of the format's fixed grid; None for formats that carry their own
                   scale (integers with an amax scale, DFP, MX, NVFP4, block-scaled FP8, ternary)
    min_normal     smallest normal magnitude (float-like grids), else None
    min_subnormal  smallest non-zero magnitude of a fixed grid (its quantum for fixed point), else None
    specials       "ieee" (Inf and NaN), "fn" (NaN only), "fnuz" (one NaN, no -0), "none" (every code finite)
    block          elements that share one scale: (32,), (16, 16), ...; None for per-tensor, per-row or no scale
    axis           the axis its blocks / per-slice scales run along (None: none)
    oriented       the consuming op re-orients it along its GEMM's reduction axis (``dataclasses.replace(fmt,
                   axis=...)``): block and per-slice scaled formats
    scale_format   the stored scale: "e8m0", "e4m3+fp32", "fp32", "pow2", ... (None: no stored scale)
    scale_bits     bits of one stored scale (0 when there is none)
    """

    name: str
    bits: int
    max: float | None = None
    min_normal: float | None = None
    min_subnormal: float | None = None
    specials: str = "none"
    block: tuple[int, ...] | None = None
    axis: int | None = None
    oriented: bool = False
    scale_format: str | None = None
    scale_bits: int = 0

    def __post_init__(self) -> None:
        if self.specials not in SPECIALS:
            raise ValueError(f"unknown specials {self.specials!r}; valid: {', '.join(SPECIALS)}")

    @property
    def scaled(self) -> bool:
        """Whether the format carries its own scale(s)."""
        return self.scale_format is not None

    @property
    def bits_per_element(self) -> float:
        """Storage per element with the block's scale amortised (per-tensor/per-row scales count as 0)."""
        n = math.prod(self.block) if self.block else 0
        return self.bits + (self.scale_bits / n if n else 0.0)


def check_input(x: Any) -> torch.Tensor:
    """Accept a floating-point tensor; anything else is a TypeError naming what was given."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"quantize expects a torch.Tensor, got {type(x).__name__}")
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(
            f"quantize expects a floating-point tensor (float32, float64, float16, bfloat16), got dtype {x.dtype}"
        )
    return x


def check_bool(name: str, v: Any) -> bool:
    """A real boolean (``True``/``False``, numpy's included); a string such as ``"false"`` is refused, since it would be
    true."""
    if isinstance(v, bool) or type(v).__name__ == "bool_":
        return bool(v)
    raise TypeError(f"{name} must be True or False, got {v!r}")


def check_generator(generator: Any) -> None:
    """None or a ``torch.Generator``; anything else is a one-line TypeError."""
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__} {generator!r}")


class Format(abc.ABC):
    """A number format. ``quantize`` returns a new tensor of the input's dtype holding only values of the format
    (times its scale, for scaled formats).

    The same in every format family: the result carries no autograd history (rounding has no useful gradient; use
    ``lowp.quantize_ste`` for a straight-through one), and a ``meta`` tensor gives an empty ``meta`` tensor of the
    same shape and dtype (shape propagation, no values)."""

    name: str

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        FORMAT_KINDS[cls.__name__] = cls

    @property
    @abc.abstractmethod
    def info(self) -> FormatInfo:
        """The format's typed description (``FormatInfo``)."""

    def quantize(
        self,
        x: torch.Tensor,
        rounding: str = "nearest",
        *,
        saturate: bool = False,
        rand_bits: int | None = None,
        generator: torch.Generator | None = None,
        out: torch.Tensor | None = None,
    ) -> torch.Tensor:
        check_input(x)
        check_rounding(rounding)
        k = check_rand_bits(rand_bits)
        saturate = check_bool("saturate", saturate)
        check_generator(generator)
        if out is not None:
            if out.shape != x.shape or out.dtype != x.dtype:
                raise ValueError(f"out must have shape {tuple(x.shape)} and dtype {x.dtype}, got "
                                 f"{tuple(out.shape)} and {out.dtype}")
        if x.numel() == 0:  # nothing to round (and no amax to take)
            return torch.empty_like(x, memory_format=torch.contiguous_format) if out is None else out
        if x.device.type == "meta":  # no values to round: shape and dtype only, alike for every format
            return torch.empty_like(x, memory_format=torch.contiguous_format) if out is None else out
        if x.requires_grad:  # alike for every format: the rounded tensor is a leaf without history
            x = x.detach()
        y = self._quantize(x, rounding, saturate, k, generator, out)
        if out is not None and y is not out:
            out.copy_(y)
            return out
        return y

    @abc.abstractmethod
    def _quantize(self, x, rounding, saturate, rand_bits, generator, out) -> torch.Tensor:
        ...

    @abc.abstractmethod
    def describe(self) -> dict[str, Any]:
        """Table row for ``lowp formats``: bits, bias, max, min_normal, min_subnormal, special, notes."""

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)  # type: ignore[call-overload]
        d["kind"] = type(self).__name__
        return d
