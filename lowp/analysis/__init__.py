"""lowp.analysis (see docs/architecture.md): numerics statistics of quantized tensors (``stats``,
``NumericsCollector``), accumulation bit-width analysis (``vrr``, Sakr et al. 2019) and per-layer sensitivity."""
from .collector import NumericsCollector, numerics_collector
from .sensitivity import LayerSensitivity, SensitivityReport, layer_sensitivity
from .gemm_shapes import GemmShape, gemm_shapes, model_accum_bits
from .stats import (amax, exponent_histogram, overflow_fraction, sqnr_db, subnormal_fraction, tensor_stats,
                    underflow_fraction)
from .vrr import VRR, min_accumulator_bits, retained_variance, vrr, vrr_table
from .vrr_mc import vrr_monte_carlo

__all__ = ["NumericsCollector", "numerics_collector", "GemmShape", "gemm_shapes", "model_accum_bits", "amax",
           "exponent_histogram", "overflow_fraction", "sqnr_db", "subnormal_fraction", "tensor_stats",
           "underflow_fraction", "VRR", "min_accumulator_bits", "retained_variance", "vrr", "vrr_table",
           "vrr_monte_carlo", "layer_sensitivity", "LayerSensitivity", "SensitivityReport"]
