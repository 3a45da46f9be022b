"""lowp: reduced-precision deep learning on PyTorch — emulate number formats bit-exactly, train and run networks
with the recipes of the research, and measure what each costs and buys against FP32."""
from .formats import (DFPFormat, E8M0Format, FixedFormat, FloatFormat, Format, IntFormat, MXFormat, TernaryFormat,
                      format_names, get_format)
from .quantize import quantize, quantize_ste
from .rounding import ROUNDING_MODES

__version__ = "0.1.0"

__all__ = [
    "quantize", "quantize_ste", "get_format", "format_names", "ROUNDING_MODES",
    "Format", "FloatFormat", "IntFormat", "FixedFormat", "DFPFormat", "MXFormat", "E8M0Format", "TernaryFormat",
]
