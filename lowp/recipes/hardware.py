"""Named recipes of today's accelerators' low-precision training stacks (docs/accelerator-recipes.md): Transformer Engine's current,
delayed, block (DeepSeek-V3) and NVFP4 scaling, torchao's tensorwise and rowwise FP8, the ROCm/MI300 FNUZ variant,
the OCP MX recipes, and hardware presets bundling format, scaling, accumulation and rounding. Every operand of
every GEMM is quantized along that GEMM's reduction axis (per-GEMM operand casts, lowp/ops/functions._CastGemm).
Each one's ``source`` names where the settings come from; ``notes`` state what is emulated and what is not.
NVFP4 ablations are modifiers: ``nvfp4+no-rht``, ``nvfp4+no-sr``, ``nvfp4+no-2d``."""
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


def _casts(x: TensorSpec, w: TensorSpec, g: TensorSpec, *, w2: TensorSpec | None = None,
           xw: TensorSpec | None = None, gw: TensorSpec | None = None) -> dict:
    """The six operand casts: x, w for forward; dy, w for dgrad; x, dy for wgrad (defaults: the same specs)."""
    return dict(input=x, weight=w, grad_output=g, weight_dgrad=w2 or w, input_wgrad=xw or x,
                grad_output_wgrad=gw or g)


def fp8_rowwise() -> Recipe:
    s = T("fp8-row-pow2")
    return Recipe(
        name="fp8-rowwise", **_casts(s, s, s),
        source="torchao float8 training, Float8LinearConfig recipe 'rowwise'",
        notes="E4M3 for every operand of every GEMM (gradients too), one scale per row along the reduction axis of "
              "the consuming GEMM (x and W along K, dy and W along N for dgrad, x and dy along the tokens for "
              "wgrad), s = 448 / max(amax_row, 1e-12) computed in float64, rounded down to a power of two "
              "(torchao's round_scales_to_power_of_2); FP32 accumulation and outputs; attention in high precision.")


def fp8_rowwise_gw_hp() -> Recipe:
    s = T("fp8-row-pow2")
    hp = T("fp32")
    return Recipe(
        name="fp8-rowwise-gw-hp", **_casts(s, s, s, xw=hp, gw=hp),
        source="torchao float8 training, Float8LinearConfig recipe 'rowwise_with_gw_hp'",
        notes="As fp8-rowwise, but the weight-gradient GEMM dW = dyᵀ·x runs in high precision (FP32 operands), "
              "the recipe torchao offers for accuracy at a small cost in speed.")


def _blockwise(name: str, pow2: bool, acc: str | None, source: str, extra: str) -> Recipe:
    a = T("fp8-1x128-pow2" if pow2 else "fp8-1x128")
    w = T("fp8-128x128-pow2" if pow2 else "fp8-128x128")
    return Recipe(
        name=name, **_casts(a, w, a), accumulate=acc, source=source,
        notes="E4M3 everywhere; activations and gradients in 1x128 tiles along the consuming GEMM's reduction axis "
              "(x along K for forward and along the tokens for wgrad; dy along N for dgrad and along the tokens for "
              "wgrad), weights in 128x128 blocks (the same blocks for W and Wᵀ, so at most one 2-D operand per "
              f"GEMM); s = 448 / amax_block in FP32{', rounded down to a power of two' if pow2 else ''}. " + extra)


def fp8_blockwise() -> Recipe:
    return _blockwise("fp8-blockwise", True, None,
                      "NVIDIA Transformer Engine, recipe.Float8BlockScaling (DeepSeek-V3-style 1x128 / 128x128)",
                      "Power-of-two scales as TE's default; FP32 accumulation (TE on Hopper promotes partial "
                      "sums; see deepseek-v3-fp8 for the accumulator model). Attention in high precision.")


def deepseek_v3_fp8() -> Recipe:
    return _blockwise("deepseek-v3-fp8", False, "tc14-p128",
                      "DeepSeek-AI 2024, DeepSeek-V3 Technical Report, §3.3 (FP8 training)",
                      "FP32 scales; every GEMM (forward, dgrad, wgrad) accumulates as Hopper's FP8 tensor cores: "
                      "about 14 bits kept by the accumulator (truncating alignment), promoted to FP32 every 128 "
                      "reduction elements (lowp's tensor-core model, an approximation: lowp/ops/tensor_core.py). "
                      "Attention, embedding, output head, norms in BF16/FP32 in the report: here exempt the first "
                      "and last layers with exempt_first_last if wanted (not set).")


def h100_fp8() -> Recipe:
    r = fp8_delayed()
    return r.replace(
        name="h100-fp8", accumulate="tc14", accumulate_backward="fp32",
        source="NVIDIA Transformer Engine on H100: DelayedScaling HYBRID (its default recipe) with TE's GEMM "
               "settings: fast FP8 accumulation in the forward GEMM, split (FP32) accumulation in dgrad and wgrad",
        notes="fp8-delayed (E4M3 forward, E5M2 gradients, amax history 1024) plus the accumulators TE asks Hopper "
              "for: the forward GEMM with fast accumulation (lowp's model: 14 bits kept, truncating alignment, "
              "never promoted; an approximation, lowp/ops/tensor_core.py), backward GEMMs in FP32. The "
              "accumulator model is slow (a Python loop over each promotion interval): expect long steps.")


def nvfp4(name: str = "nvfp4", source: str = "") -> Recipe:
    a = T("nvfp4")
    g = T("nvfp4", "stochastic")
    w = T("nvfp4-16x16")
    return Recipe(
        name=name, **_casts(a, w, g), wgrad_hadamard=16,
        source=source or "NVIDIA Transformer Engine, recipe.NVFP4BlockScaling (reference: custom_recipes/"
                         "reference_nvfp4.py); NVIDIA 2025, Pretraining LLMs with NVFP4",
        notes="E2M1 elements; per-tensor FP32 scale and E4M3 scale per 16 elements along the consuming GEMM's "
              "reduction axis (TE's order of operations, bit-exact codes and block scales); weights in 16x16 "
              "tiles (the same tiles for W and Wᵀ); the wgrad operands (x and dy along the tokens) rotated by a "
              "16-point random Hadamard transform (TE's fixed signs) before their casts; stochastic rounding of "
              "the gradients (dy, both backward copies). GEMMs on the dequantized values (q·d_b)·s_dec in FP32: "
              "equal to the hardware's block-scaled sum to FP32 rounding. Ablations: +no-rht, +no-sr, +no-2d.")


def b200_mxfp8() -> Recipe:
    s = T("mxfp8_e4m3-rceil")
    return Recipe(
        name="b200-mxfp8", **_casts(s, s, s),
        source="NVIDIA Transformer Engine on Blackwell (B200): recipe.MXFP8BlockScaling (fp8_format=E4M3)",
        notes="MXFP8 as TE runs it on B200: E4M3 elements for every operand (gradients too), 32-element blocks "
              "along the consuming GEMM's reduction axis, E8M0 scales rounded with NVIDIA's rceil "
              "(2^ceil(log2(amax/448))); FP32 accumulation; attention in high precision.")


def b200_nvfp4() -> Recipe:
    return nvfp4("b200-nvfp4", "NVIDIA Transformer Engine on Blackwell (B200): recipe.NVFP4BlockScaling, as nvfp4")


def _no_rht(r: Recipe, arg) -> Recipe:
    return r.replace(name=f"{r.name}+no-rht", wgrad_hadamard=None)


def _no_sr(r: Recipe, arg) -> Recipe:
    import dataclasses

    kw = {f: dataclasses.replace(getattr(r, f), rounding="nearest") for f in ("grad_output", "grad_output_wgrad")
          if getattr(r, f) is not None}
    return r.replace(name=f"{r.name}+no-sr", **kw)


def _no_2d(r: Recipe, arg) -> Recipe:
    kw = {f: r.input for f in ("weight", "weight_dgrad")}
    return r.replace(name=f"{r.name}+no-2d", **kw)


MODIFIERS = {"no-rht": _no_rht, "no-sr": _no_sr, "no-2d": _no_2d}


def hardware_recipes() -> list[Recipe]:
    return [fp8_tensorwise(), fp8_current(), fp8_delayed(), fp8_rowwise(), fp8_rowwise_gw_hp(), fp8_blockwise(),
            nvfp4(), mi300_fp8(), h100_fp8(), b200_mxfp8(), b200_nvfp4(), deepseek_v3_fp8()]
