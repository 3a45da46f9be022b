"""lowp: reduced-precision deep learning on PyTorch — emulate number formats bit-exactly, train and run networks
with the recipes of the research, and measure what each costs and buys against FP32."""
from .formats import (BlockScaledFormat, DFPFormat, E8M0Format, FixedFormat, FloatFormat, Format, IntFormat, MXFormat,
                      NVFP4Format, RandomHadamard, TernaryFormat, format_names, get_format)
from .quantize import quantize, quantize_ste
from .rounding import ROUNDING_MODES
from .ops.modules import Matmul
from .ops.accumulate import matmul
from .ops.tensor_core import TensorCoreAccumulator
from .scaling import DelayedScaler, LossScaler, amax_scale, current_scale, make_loss_scaler
from .recipes.optim import LowpOptimizer
from .ops.ktanh import KGELU, KSigmoid, KSwish, KTanh, kgelu, ksigmoid, kswish, ktanh, replace_activations
from .recipes import LossScaling, Recipe, TensorSpec, coverage, emulate, get_recipe, recipe_names, restore
from .analysis import NumericsCollector, layer_sensitivity, min_accumulator_bits, vrr, vrr_monte_carlo

__version__ = "0.1.0"

from .experiments.compare import compare  # noqa: E402  (lowp compare; reads __version__)
from .experiments.tasks import register_task, task_names  # noqa: E402
from .techniques import qat as _qat  # noqa: E402,F401  (registers pact/dorefa/wrpn/ternary-ft recipes)
from .techniques import autosparse as _autosparse  # noqa: E402,F401  (registers RECIPE+autosparse)

__all__ = [
    "quantize", "quantize_ste", "get_format", "format_names", "ROUNDING_MODES",
    "Format", "FloatFormat", "IntFormat", "FixedFormat", "DFPFormat", "MXFormat", "E8M0Format", "TernaryFormat",
    "BlockScaledFormat", "NVFP4Format", "RandomHadamard", "TensorCoreAccumulator",
    "Recipe", "TensorSpec", "LossScaling", "get_recipe", "recipe_names", "emulate", "restore", "coverage", "Matmul",
    "matmul",
    "LowpOptimizer", "make_loss_scaler", "LossScaler", "DelayedScaler", "amax_scale", "current_scale",
    "compare", "register_task", "task_names",
    "NumericsCollector", "vrr", "vrr_monte_carlo", "min_accumulator_bits", "layer_sensitivity",
    "ktanh", "ksigmoid", "kswish", "kgelu", "KTanh", "KSigmoid", "KSwish", "KGELU", "replace_activations",
]
