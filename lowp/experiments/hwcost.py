"""What a recipe would buy on hardware: the report's estimate section.

From the model's GEMM shapes (``lowp.analysis.gemm_shapes`` on one training batch: m tokens or output positions,
k inputs, n outputs per Linear/Conv layer) and parameter count, stored in results.json as ``model``:

- :func:`estimate`: the roofline step time of the GEMMs (``lowp.analysis.roofline``) on each hardware of
  ``roofline.HARDWARE`` with the recipe's tensor widths, as × the same step in all-BF16 and all-FP32 (an estimate:
  see roofline's docstring for what it leaves out);
- :func:`storage`: the bytes a recipe implies for one training step of that batch, exactly from the shapes and the
  formats' widths (block scales included): master weights, the GEMM copy of the weights, activations saved for
  backward (each layer's GEMM input, in the format its wgrad GEMM reads), optimizer state, and the gradient payload
  one data-parallel all-reduce communicates per step.

A role the recipe leaves None is FP32 (32 bits), as lowp trains it. Layers the recipe exempts are counted in the
recipe's formats all the same (a small overestimate of the gain).
"""
from __future__ import annotations

import math
from ..analysis.roofline import HARDWARE, LayerBits, layer_gemms, step_time  # noqa: F401 (HARDWARE re-exported)


def format_bits(name: str | None) -> float:
    """Storage bits per element of a lowp format, block scales included: MX 8-bit scale per block, NVFP4 an E4M3
    per 16 elements (tile) plus a negligible FP32 tensor scale, block-scaled FP8 an FP32 scale per block; 32 for
    None (FP32)."""
    if name is None:
        return 32.0
    from ..formats import get_format

    f = get_format(name)
    d = f.describe()
    bits = float(d["bits"])
    block = getattr(f, "block", None)
    if block is None:
        return bits
    size = math.prod(block) if isinstance(block, tuple) else int(block)
    kind = type(f).__name__
    scale_bits = 8 if kind in ("MXFormat", "NVFP4Format") else 32
    return bits + scale_bits / size


def _spec_bits(spec: dict, role: str, fallback: str | None = None) -> float:
    v = spec.get(role)
    if v is None and fallback is not None:
        v = spec.get(fallback)
    return format_bits(None if v is None else v["format"])


def recipe_bits(spec: dict) -> LayerBits:
    """The widths of a recipe's training-step tensors from its ``to_dict`` form (the dgrad/wgrad operand casts fall
    back to the forward roles)."""
    b = _spec_bits
    return LayerBits(x=b(spec, "input"), w=b(spec, "weight"), y=b(spec, "output"), dy=b(spec, "grad_output"),
                     w_dgrad=b(spec, "weight_dgrad", "weight"), dx=b(spec, "grad_input"),
                     x_wgrad=b(spec, "input_wgrad", "input"), dy_wgrad=b(spec, "grad_output_wgrad", "grad_output"),
                     dw=b(spec, "grad_weight"))


def model_shapes(task, batch_size: int) -> dict | None:
    """``{"gemms": [{"layer", "m", "k", "n"}], "params": int, "optimizer_states": int, "batch_size"}`` of the
    task's model on one training batch (a fresh model, RNG state kept); None when it cannot be measured (e.g. a
    model without Linear/Conv layers, or inputs that are not a tensor)."""
    import torch

    from ..analysis.gemm_shapes import gemm_shapes
    from .data import first_inputs

    try:
        with torch.random.fork_rng(devices=[]):
            model = task.build_model()
            data = task.load_data()
            x = first_inputs(data, batch_size)
            if not isinstance(x, torch.Tensor):
                return None
            shapes = gemm_shapes(model, x)
        if not shapes:
            return None
        states = 2 if task.optimizer == "adam" else (1 if task.momentum else 0)
        return {"gemms": [{"layer": g.layer, "m": g.weight_grad, "k": g.forward, "n": g.backward} for g in shapes],
                "params": int(sum(p.numel() for p in model.parameters())), "optimizer_states": states,
                "batch_size": int(x.shape[0])}
    except Exception:  # noqa: BLE001 - the estimate is optional; the comparison goes on without it
        return None


def _gemms(model: dict, bits: LayerBits) -> list:
    out = []
    for g in model["gemms"]:
        out.extend(layer_gemms(g["m"], g["k"], g["n"], bits))
    return out


def estimate(model: dict, spec: dict) -> dict[str, dict[str, float]]:
    """``{hardware: {"step_s", "x_bf16", "x_fp32"}}``: the recipe's roofline GEMM time per training step and its
    ratio to all-BF16 and all-FP32 steps on the same hardware (< 1: faster)."""
    bits = recipe_bits(spec)
    out = {}
    for name, hw in HARDWARE.items():
        t = step_time(hw, _gemms(model, bits))
        t16 = step_time(hw, _gemms(model, LayerBits.uniform(16)))
        t32 = step_time(hw, _gemms(model, LayerBits.uniform(32)))
        out[name] = {"step_s": t, "x_bf16": t / t16, "x_fp32": t / t32}
    return out


def storage(model: dict, spec: dict) -> dict[str, float]:
    """Bytes per training step of the model's batch (see the module docstring)."""
    bits = recipe_bits(spec)
    params = model["params"]
    gemm_weights = sum(g["k"] * g["n"] for g in model["gemms"])
    master = _spec_bits(spec, "master")
    return {
        "master_weights": params * master / 8,
        "gemm_weights": gemm_weights * bits.w / 8,
        "saved_activations": sum(g["m"] * g["k"] for g in model["gemms"]) * bits.x_wgrad / 8,
        "optimizer_state": params * model["optimizer_states"] * _spec_bits(spec, "optim_state") / 8,
        "gradient_comm": params * bits.dw / 8,
    }


STORAGE_LABELS = {"master_weights": "master weights", "gemm_weights": "GEMM weight copy",
                  "saved_activations": "activations saved for backward", "optimizer_state": "optimizer state",
                  "gradient_comm": "gradient all-reduce payload / step"}


def presets_present() -> dict[str, tuple[str, ...]]:
    """Hardware name -> the lowp recipe presets made for it."""
    return {n: hw.presets for n, hw in HARDWARE.items()}


def fmt_bytes(n: float) -> str:
    for unit, f in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= f:
            return f"{n / f:.2f} {unit}"
    return f"{n:.0f} B"

