"""Number formats: what values exist, and how a tensor is mapped onto them (README.md, "Formats and rounding")."""
from .base import Format, FormatInfo
from .block import E8M0Format, MXFormat
from .blockwise import BlockScaledFormat
from .hadamard import RandomHadamard
from .nvfp4 import NVFP4Format
from .dfp import DFPFormat
from .float import FloatFormat
from .integer import FixedFormat, IntFormat
from .registry import FORMATS, format_from_dict, format_names, get_format
from .ternary import TernaryFormat

__all__ = ["Format", "FormatInfo", "FloatFormat", "IntFormat", "FixedFormat", "DFPFormat", "MXFormat", "E8M0Format",
           "TernaryFormat", "BlockScaledFormat", "NVFP4Format", "RandomHadamard", "FORMATS", "get_format",
           "format_names", "format_from_dict"]
