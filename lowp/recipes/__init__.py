"""lowp.recipes (see docs/architecture.md): Recipe/TensorSpec/LossScaling, the named recipes, and the model
transform ``emulate``/``restore``."""
from .coverage import Coverage, CoverageRow, coverage
from .emulate import emulate, emulated_layers, restore
from .library import RECIPES, get_recipe, recipe_names
from .recipe import LossScaling, Recipe, TensorSpec

__all__ = ["Recipe", "TensorSpec", "LossScaling", "get_recipe", "recipe_names", "RECIPES", "emulate", "restore",
           "emulated_layers", "coverage", "Coverage", "CoverageRow"]
