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


class Format(abc.ABC):
    """A number format. ``quantize`` returns a new tensor of the input's dtype holding only values of the format
    (times its scale, for scaled formats)."""

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
        if out is not None:
            if out.shape != x.shape or out.dtype != x.dtype:
                raise ValueError(f"out must have shape {tuple(x.shape)} and dtype {x.dtype}, got "
                                 f"{tuple(out.shape)} and {out.dtype}")
        if x.numel() == 0:  # nothing to round (and no amax to take)
            return torch.empty_like(x, memory_format=torch.contiguous_format) if out is None else out
        y = self._quantize(x, rounding, bool(saturate), k, generator, out)
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
