"""lowp: reduced-precision deep learning on PyTorch — emulate number formats bit-exactly, train and run networks
with the recipes of the research, and measure what each costs and buys against FP32.

``import lowp`` loads the core layers only (formats, rounding, scaling, quantize, ops, recipes). The names of the
higher layers (``lowp.compare``, ``lowp.register_task``, ``lowp.NumericsCollector``, K-TanH, ...) and the
subpackages ``lowp.analysis``, ``lowp.techniques``, ``lowp.distributed``, ``lowp.experiments`` and ``lowp.cli`` are
imported on first use (module ``__getattr__``, PEP 562). The techniques register their recipe families, modifiers
and model transforms when ``lowp.recipes`` first needs them (``recipes/extensions.py``).
"""
import importlib

from .formats import (BlockScaledFormat, DFPFormat, E8M0Format, FixedFormat, FloatFormat, Format, FormatInfo, IntFormat,
                      MXFormat, NVFP4Format, RandomHadamard, TernaryFormat, format_names, get_format)
from .ops.accumulate import matmul
from .ops.modules import Matmul
from .ops.tensor_core import TensorCoreAccumulator
from .quantize import quantize, quantize_ste
from .recipes import LossScaling, Recipe, TensorSpec, coverage, emulate, get_recipe, recipe_names, restore
from .recipes.optim import LowpOptimizer
from .rounding import ROUNDING_MODES
from .scaled_quantizer import ScaledQuantizer
from .scaling import DelayedScaler, LossScaler, amax_scale, current_scale, make_loss_scaler

__version__ = "0.1.0"

__all__ = [
    "quantize", "quantize_ste", "get_format", "format_names", "ROUNDING_MODES",
    "Format", "FormatInfo", "FloatFormat", "IntFormat", "FixedFormat", "DFPFormat", "MXFormat", "E8M0Format",
    "TernaryFormat", "BlockScaledFormat", "NVFP4Format", "RandomHadamard",
    "matmul", "Matmul", "TensorCoreAccumulator",
    "Recipe", "TensorSpec", "LossScaling", "get_recipe", "recipe_names", "emulate", "restore", "coverage",
    "LowpOptimizer", "make_loss_scaler", "LossScaler", "DelayedScaler", "amax_scale", "current_scale",
    "ScaledQuantizer",
]

#: public names of the higher layers, imported on first access: name -> module that defines it
_LAZY = {
    "compare": "lowp.experiments.compare",
    "register_task": "lowp.experiments.tasks",
    "task_names": "lowp.experiments.tasks",
    "NumericsCollector": "lowp.analysis",
    "vrr": "lowp.analysis",
    "vrr_monte_carlo": "lowp.analysis",
    "min_accumulator_bits": "lowp.analysis",
    "layer_sensitivity": "lowp.analysis",
    **{n: "lowp.ops.ktanh" for n in ("ktanh", "ksigmoid", "kswish", "kgelu", "KTanh", "KSigmoid", "KSwish", "KGELU",
                                     "replace_activations")},
}
_SUBPACKAGES = ("analysis", "techniques", "distributed", "experiments", "cli")


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value  # later lookups skip this function
        return value
    if name in _SUBPACKAGES:
        return importlib.import_module(f"lowp.{name}")
    raise AttributeError(f"module 'lowp' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY) | set(_SUBPACKAGES))
