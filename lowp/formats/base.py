"""The Format interface: what values exist, and how a tensor is mapped onto them."""
from __future__ import annotations

import abc
import dataclasses
from typing import Any

import torch

from ..rounding import check_rand_bits, check_rounding

FLOAT_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


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
