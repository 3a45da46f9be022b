"""Floating-point formats of any (exponent, mantissa, bias, special-value policy, subnormals).

Special-value policies (as ml_dtypes names them):
  ieee  top exponent reserved for Inf/NaN (FP16, BF16, E5M2, E3M4, ml_dtypes' float8_e4m3 = ``e4m3ieee``)
  fn    no Inf; only the all-ones pattern is NaN (OCP E4M3, max 448)
  fnuz  no Inf, no -0, NaN is 0x80, default bias one higher (AMD/Graphcore float8 *fnuz)
  none  every pattern finite (OCP FP6 E2M3/E3M2, FP4 E2M1)
Non-saturating overflow gives what ml_dtypes' conversion gives: Inf (ieee), NaN (fn/fnuz), ±max (none).
With ``saturate=True`` overflow and ±Inf go to ±max. Directed modes follow IEEE 754: an overflow rounded toward
zero gives ±max. A NaN input stays NaN for every format (ml_dtypes turns NaN into -0 for E2M1 and the FP6 formats;
we do not). With ``subnormals=False`` results below the smallest normal after rounding are flushed to signed zero.
Float64 input is rounded directly from its own bits (no double rounding through float32); float16/bfloat16 input
is widened to float32 exactly and the result cast back (exact whenever the result is representable in the input
dtype, e.g. not for bf16 rounding of a float16 tensor near 65504).
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import torch

from . import round_reference
from .base import SPECIALS, Format, FormatInfo

_OVER_CODE = {"ieee": 1, "fn": 2, "fnuz": 2, "none": 0}


@dataclasses.dataclass(frozen=True)
class FloatFormat(Format):
    """Sign + ``exp`` exponent bits + ``man`` mantissa bits. bias defaults to 2^(exp-1)-1 (2^(exp-1) for fnuz)."""

    exp: int
    man: int
    bias: int | None = None
    special: str = "ieee"
    subnormals: bool = True
    name: str = ""

    def __post_init__(self) -> None:
        if isinstance(self.exp, bool) or not isinstance(self.exp, int) or not 1 <= self.exp <= 8:
            raise ValueError(f"FloatFormat exp must be an int in 1..8, got {self.exp!r}")
        if isinstance(self.man, bool) or not isinstance(self.man, int) or not 0 <= self.man <= 23:
            raise ValueError(f"FloatFormat man must be an int in 0..23, got {self.man!r}")
        if self.special not in SPECIALS:
            raise ValueError(f"unknown special-value policy {self.special!r}; valid: {', '.join(SPECIALS)}")
        if self.bias is None:
            object.__setattr__(self, "bias", 2 ** (self.exp - 1) - (0 if self.special == "fnuz" else 1))
        if isinstance(self.bias, bool) or not isinstance(self.bias, int):
            raise ValueError(f"FloatFormat bias must be an int, got {self.bias!r}")
        if self.special == "ieee" and self.exp == 1:
            raise ValueError("FloatFormat with special='ieee' needs exp >= 2 (the top exponent is reserved)")
        if self.special == "fn" and self.exp == 1 and self.man == 0:
            raise ValueError("FloatFormat(1, 0, special='fn') has no finite non-zero value")
        if self.emin - self.man < -149 or self.emax > 127:
            raise ValueError(
                f"FloatFormat(exp={self.exp}, man={self.man}, bias={self.bias}) spans 2^{self.emin - self.man}.."
                f"2^{self.emax}, outside float32's 2^-149..2^127; choose a bias in "
                f"{2 ** self.exp - 1 - 127 - (1 if self.special == 'ieee' else 0)}..{150 - self.man}"
            )
        if not self.name:
            object.__setattr__(self, "name", f"e{self.exp}m{self.man}" + ("" if self.special == "ieee" else self.special))

    # --- the value set -------------------------------------------------------------------------------------------
    @property
    def emin(self) -> int:
        """Exponent of the smallest normal number."""
        return 1 - self.bias

    @property
    def emax(self) -> int:
        """Exponent of the largest finite number."""
        top = 2**self.exp - 1 - self.bias
        if self.special == "ieee" or (self.special == "fn" and self.man == 0):
            return top - 1
        return top

    @property
    def max(self) -> float:
        """Largest finite value."""
        frac = 2 - 2.0 ** -self.man
        if self.special == "fn" and self.man > 0:
            frac = 2 - 2.0 ** (1 - self.man)  # the all-ones mantissa at the top exponent is NaN
        return math.ldexp(frac, self.emax)

    @property
    def min_normal(self) -> float:
        return math.ldexp(1.0, self.emin)

    @property
    def min_subnormal(self) -> float | None:
        return math.ldexp(1.0, self.emin - self.man) if self.subnormals else None

    @property
    def total_bits(self) -> int:
        return 1 + self.exp + self.man

    @property
    def is_identity_for_float32(self) -> bool:
        return self.exp == 8 and self.man == 23 and self.bias == 127 and self.special == "ieee" and self.subnormals

    @functools.cached_property
    def info(self) -> FormatInfo:
        return FormatInfo(self.name, self.total_bits, self.max, self.min_normal, self.min_subnormal, self.special)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "bits": self.total_bits,
            "bias": self.bias,
            "max": self.max,
            "min_normal": self.min_normal,
            "min_subnormal": self.min_subnormal,
            "special": self.special,
        }

    # --- quantization --------------------------------------------------------------------------------------------
    @functools.cache
    def kernel_params(self, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        """The format as 0-d tensors for ``round_reference.round_float`` (one compiled graph serves all formats)."""
        i64 = functools.partial(torch.tensor, dtype=torch.int64)
        return {
            "man": i64(self.man),
            "emin": i64(self.emin),
            "maxval": torch.tensor(self.max, dtype=dtype),
            "minnorm": torch.tensor(self.min_normal, dtype=dtype),
            "over_inf": i64(_OVER_CODE[self.special]),
            "subnormals": i64(int(self.subnormals)),
            "no_negzero": i64(int(self.special == "fnuz")),
        }

    def _quantize(self, x, rounding, saturate, rand_bits, generator, out):
        from .dispatch import float_dispatch

        if x.dtype in (torch.float16, torch.bfloat16):
            y = self._quantize(x.float(), rounding, saturate, rand_bits, generator, None)
            return y.to(x.dtype)
        if x.dtype == torch.float32 and self.is_identity_for_float32:
            return x.clone() if out is None else out.copy_(x)
        return float_dispatch(x, self, rounding, saturate, rand_bits, generator, out)
