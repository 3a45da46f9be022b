"""Named recipes of today's accelerators' FP8 training stacks that need no more than per-tensor scales and the
per-GEMM operand casts (SPEC §11): Transformer Engine's current and delayed scaling, torchao's tensorwise FP8, the
ROCm/MI300 FNUZ variant, and the OCP MX recipes with every operand blocked along its own GEMM's reduction axis.
Each one's ``source`` names where the settings come from; ``notes`` state what is emulated and what is not."""
from __future__ import annotations

from .recipe import Recipe, TensorSpec

T = TensorSpec


def _hybrid(fwd: str, bwd: str, scaling: str, history: int = 16) -> tuple[TensorSpec, TensorSpec]:
    return (T(fwd, saturate=True, scaling=scaling, history=history),
            T(bwd, saturate=True, scaling=scaling, history=history))


def fp8_current() -> Recipe:
    f, b = _hybrid("e4m3", "e5m2", "current")
    return Recipe(
        name="fp8-current", input=f, weight=f, grad_output=b,
        source="NVIDIA Transformer Engine, recipe.Float8CurrentScaling (fp8_format=HYBRID)",
        notes="E4M3 activations and weights, E5M2 gradients, each with a per-tensor scale from its own amax "
              "(s = 448/amax resp. 57344/amax, margin 0), saturating casts; GEMM outputs, dgrad/wgrad results, "
              "accumulation (FP32) and master weights in high precision; attention in high precision (TE's "
              "default, fp8_dpa=False). The same tensor copy feeds all GEMMs: per-tensor scales do not depend on "
              "the orientation.")


def fp8_delayed() -> Recipe:
    f, b = _hybrid("e4m3", "e5m2", "delayed", history=1024)
    return Recipe(
        name="fp8-delayed", input=f, weight=f, grad_output=b,
        source="NVIDIA Transformer Engine, recipe.DelayedScaling (fp8_format=HYBRID, amax_history_len=1024, "
               "amax_compute_algo='max', margin=0)",
        notes="As fp8-current, but each tensor's scale comes from the max of its last 1024 amaxes (the current "
              "tensor's amax is recorded after use). Difference to TE: TE starts from scale 1 on the first step, "
              "lowp from the first tensor's own amax; TE reduces amaxes across data-parallel ranks, lowp keeps "
              "one history per process.")


def fp8_tensorwise() -> Recipe:
    f, b = _hybrid("e4m3", "e5m2", "current")
    return Recipe(
        name="fp8-tensorwise", input=f, weight=f, grad_output=b,
        source="torchao float8 training, Float8LinearConfig recipe 'tensorwise' (dynamic scaling)",
        notes="torchao's default float8 recipe: E4M3 input and weight, E5M2 grad_output, one dynamic scale per "
              "tensor (max_fp8 / amax, no power-of-two rounding), saturating casts, FP32 accumulation and "
              "outputs; only nn.Linear-like GEMMs (attention in high precision). Same arithmetic as fp8-current; "
              "kept as its own name so that torchao's and TE's recipes can be compared by name. torchao clamps "
              "amax below at 1e-12; lowp leaves all-zero tensors unscaled (both give zeros).")


def mi300_fp8() -> Recipe:
    f, b = _hybrid("e4m3fnuz", "e5m2fnuz", "delayed", history=1024)
    return Recipe(
        name="mi300-fp8", input=f, weight=f, grad_output=b,
        source="AMD Instinct MI300 (CDNA3) FP8 formats E4M3FNUZ/E5M2FNUZ (one NaN, no -0, no Inf; max 240 and "
               "57344) with Transformer Engine's DelayedScaling HYBRID recipe as ROCm's TE runs it",
        notes="As fp8-delayed with the FNUZ formats of MI300: E4M3FNUZ (bias 8, max 240) for activations and "
              "weights, E5M2FNUZ (bias 16) for gradients, saturating, amax history 1024. Accumulation FP32.")


def _mx_oriented(name: str, fwd: str, bwd: str, what: str) -> Recipe:
    return Recipe(
        name=name, input=T(fwd), weight=T(fwd), grad_output=T(bwd), weight_dgrad=T(fwd), input_wgrad=T(fwd),
        grad_output_wgrad=T(bwd), attention=T(fwd),
        source="OCP Microscaling Formats (MX) v1.0 spec; Rouhani et al. 2023, Microscaling Data Formats for Deep "
               "Learning; orientation as Transformer Engine's MXFP8BlockScaling",
        notes=f"{what} 32-element blocks share an E8M0 scale (floor rounding, OCP). Every operand of every GEMM is "
              "quantized from the high-precision tensor along that GEMM's reduction axis: x and W along K for the "
              "forward GEMM, dy and W along N for dgrad, x and dy along the token axis M for wgrad (TE's rowwise "
              "and columnwise copies). Convolutions (no per-GEMM copies) and attention products block their "
              "operands once, along the forward reduction axis. Elements saturate; nearest-even. GEMM outputs, "
              "grad_input, grad_weight, accumulation and master weights FP32.")


def mxfp8() -> Recipe:
    return _mx_oriented("mxfp8", "mxfp8_e4m3", "mxfp8_e5m2",
                        "MXFP8: E4M3 elements for activations and weights, E5M2 for errors;")


def mxfp4() -> Recipe:
    return _mx_oriented("mxfp4", "mxfp4_e2m1", "mxfp8_e5m2",
                        "MXFP4: E2M1 elements for activations and weights; errors in MXFP8 E5M2 (FP4 errors do not "
                        "train: our choice);")


def hardware_recipes() -> list[Recipe]:
    return [fp8_tensorwise(), fp8_current(), fp8_delayed(), mi300_fp8()]
