"""Named formats (README.md, "Formats and rounding"). ``get_format(name)`` also parses parametric names:
``fixed<IL,FL>``, ``int<B>`` (2..32), ``dfp<B>`` and ``dfp<B>-b<BLOCK>``, ``ternary-g<N>`` (optionally ``-thr``),
and MX variants ``<mx name>[-b<BLOCK>][-floor|-ceil|-rceil|-even]`` (e.g. ``mxfp8_e4m3-rceil``, ``mxfp4_e2m1-b16``).

Accelerator formats (docs/accelerator-recipes.md): ``nvfp4`` (TE order), ``nvfp4-torchao`` (torchao order), ``nvfp4-16x16`` /
``nvfp4-torchao-16x16`` (2-D weight tiles); FP8 E4M3 with FP32 scales ``fp8-row`` (torchao rowwise, per row along
the last axis), ``fp8-1x128`` and ``fp8-128x128`` (TE Float8BlockScaling / DeepSeek-V3 blocks), each also
``-pow2`` (scales rounded down to a power of two)."""
from __future__ import annotations

import re

from .base import FORMAT_KINDS, Format
from .block import SCALE_ROUNDINGS, E8M0Format, MXFormat
from .blockwise import BlockScaledFormat
from .dfp import DFPFormat
from .float import FloatFormat
from .integer import FixedFormat, IntFormat
from .nvfp4 import NVFP4Format
from .ternary import TernaryFormat

# Choices for IBM's formats (Wang et al. 2018): the paper gives sign/exponent/mantissa widths and the biases but not
# special values or overflow. We reserve the top exponent for Inf/NaN (IEEE style, like E5M2); pass saturate=True
# to clamp instead. fp8-152 therefore has the same value set as e5m2.
_IBM_NOTE = "IBM (Wang'18): specials not in source; we use IEEE-style (top exponent = Inf/NaN)"

_E4M3 = FloatFormat(4, 3, special="fn", name="e4m3")
_E5M2 = FloatFormat(5, 2, name="e5m2")
_E2M3 = FloatFormat(2, 3, special="none", name="e2m3")
_E3M2 = FloatFormat(3, 2, special="none", name="e3m2")
_E2M1 = FloatFormat(2, 1, special="none", name="e2m1")

FORMATS: dict[str, Format] = {
    "fp32": FloatFormat(8, 23, name="fp32"),
    "tf32": FloatFormat(8, 10, name="tf32"),
    "bf16": FloatFormat(8, 7, name="bf16"),
    "fp16": FloatFormat(5, 10, name="fp16"),
    "e5m2": _E5M2,
    "e4m3": _E4M3,
    "e4m3fnuz": FloatFormat(4, 3, special="fnuz", name="e4m3fnuz"),
    "e5m2fnuz": FloatFormat(5, 2, special="fnuz", name="e5m2fnuz"),
    "e3m4": FloatFormat(3, 4, name="e3m4"),
    "e4m3ieee": FloatFormat(4, 3, name="e4m3ieee"),
    "e2m3": _E2M3,
    "e3m2": _E3M2,
    "e2m1": _E2M1,
    "e8m0": E8M0Format(),
    "fp8-152": FloatFormat(5, 2, bias=15, special="ieee", name="fp8-152"),
    "fp16-169": FloatFormat(6, 9, bias=31, special="ieee", name="fp16-169"),
    "int4": IntFormat(4),
    "int8": IntFormat(8),
    "int16": IntFormat(16),
    "dfp8": DFPFormat(8),
    "dfp16": DFPFormat(16),
    "mxfp8_e4m3": MXFormat(_E4M3, name="mxfp8_e4m3"),
    "mxfp8_e5m2": MXFormat(_E5M2, name="mxfp8_e5m2"),
    "mxfp6_e3m2": MXFormat(_E3M2, name="mxfp6_e3m2"),
    "mxfp6_e2m3": MXFormat(_E2M3, name="mxfp6_e2m3"),
    "mxfp4_e2m1": MXFormat(_E2M1, name="mxfp4_e2m1"),
    "mxint8": MXFormat("int8", name="mxint8"),
    "ternary": TernaryFormat(64, name="ternary"),
    "nvfp4": NVFP4Format("te", 16, name="nvfp4"),
    "nvfp4-torchao": NVFP4Format("torchao", 16, name="nvfp4-torchao"),
    "nvfp4-16x16": NVFP4Format("te", (16, 16), name="nvfp4-16x16"),
    "nvfp4-torchao-16x16": NVFP4Format("torchao", (16, 16), name="nvfp4-torchao-16x16"),
    "fp8-row": BlockScaledFormat(_E4M3, None, style="torchao", name="fp8-row"),
    "fp8-row-pow2": BlockScaledFormat(_E4M3, None, pow2=True, style="torchao", name="fp8-row-pow2"),
    "fp8-1x128": BlockScaledFormat(_E4M3, 128, style="te", name="fp8-1x128"),
    "fp8-1x128-pow2": BlockScaledFormat(_E4M3, 128, pow2=True, style="te", name="fp8-1x128-pow2"),
    "fp8-128x128": BlockScaledFormat(_E4M3, (128, 128), style="te", name="fp8-128x128"),
    "fp8-128x128-pow2": BlockScaledFormat(_E4M3, (128, 128), pow2=True, style="te", name="fp8-128x128-pow2"),
}

NOTES = {
    "fp8-152": _IBM_NOTE,
    "fp16-169": _IBM_NOTE,
    "e4m3": "OCP E4M3 (= e4m3fn)",
    "e4m3ieee": "ml_dtypes float8_e4m3 (IEEE-style, max 240)",
    "tf32": "NVIDIA TF32 (10-bit mantissa, fp32 range)",
    "nvfp4": "TE NVFP4 reference order",
    "nvfp4-torchao": "torchao nvfp4_quantize order",
    "fp8-row": "torchao float8 rowwise scale",
    "fp8-1x128": "TE Float8BlockScaling / DeepSeek-V3 activation tiles",
    "fp8-128x128": "TE Float8BlockScaling / DeepSeek-V3 weight blocks",
}

_MX_BASES = ("mxfp8_e4m3", "mxfp8_e5m2", "mxfp6_e3m2", "mxfp6_e2m3", "mxfp4_e2m1", "mxint8")


def _mx_variant(m) -> MXFormat:
    base = FORMATS[m[1]]
    block = int(m[2]) if m[2] else base.block
    rounding = m[3] or "floor"
    return MXFormat(base.element, block, base.axis, name=m[0], scale_rounding=rounding)

_PARAMETRIC = [
    (re.compile(r"fixed<(-?\d+),(-?\d+)>"), lambda m: FixedFormat(int(m[1]), int(m[2]))),
    (re.compile(r"int(\d+)"), lambda m: IntFormat(int(m[1]))),
    (re.compile(r"dfp(\d+)(?:-b(\d+))?"), lambda m: DFPFormat(int(m[1]), int(m[2]) if m[2] else None)),
    (re.compile(r"ternary-g(\d+)(-thr)?"),
     lambda m: TernaryFormat(int(m[1]), "threshold" if m[2] else "optimal")),
    (re.compile(rf"({'|'.join(_MX_BASES)})(?:-b(\d+))?(?:-({'|'.join(SCALE_ROUNDINGS)}))?"), _mx_variant),
]


def format_names() -> list[str]:
    return list(FORMATS)


def get_format(name: str | Format) -> Format:
    """The format called ``name`` (a Format is returned as is); unknown names raise ValueError listing the known."""
    if isinstance(name, Format):
        return name
    if not isinstance(name, str):
        raise TypeError(f"a format is a name or a Format, got {type(name).__name__}")
    key = name.strip().lower().replace(" ", "")
    if key in FORMATS:
        return FORMATS[key]
    for pattern, make in _PARAMETRIC:
        m = pattern.fullmatch(key)
        if m:
            return make(m)
    raise ValueError(
        f"unknown format {name!r}; known formats: {', '.join(FORMATS)}; parametric: fixed<IL,FL>, int<B>, dfp<B>, "
        f"dfp<B>-b<BLOCK>, ternary-g<N>[-thr], <mx name>[-b<BLOCK>][-floor|-ceil|-rceil|-even]"
    )


def format_from_dict(d: dict) -> Format:
    """Inverse of ``Format.to_dict``."""
    d = dict(d)
    kind = d.pop("kind", None)
    if kind not in FORMAT_KINDS:
        raise ValueError(f"unknown format kind {kind!r}; valid: {', '.join(sorted(FORMAT_KINDS))}")
    return FORMAT_KINDS[kind](**d)
