"""Named recipes reproducing the papers (SPEC §5). Each one's ``source`` names the paper, ``notes`` every choice
the source (as available to us: mostly abstracts) does not pin down. ``get_recipe(name)`` also accepts a Recipe
(returned as is) or a path to a JSON file written by ``Recipe.to_json``.
"""
from __future__ import annotations

import os

from .recipe import LossScaling, Recipe, TensorSpec

T = TensorSpec


def _bf16() -> Recipe:
    s = T("bf16")
    return Recipe(
        name="bf16", input=s, weight=s, output=s, grad_output=s, grad_input=s, grad_weight=s,
        source="Kalamkar et al. 2019, A Study of BFLOAT16 for Deep Learning Training",
        notes="GEMM inputs, outputs and all gradients in BF16 with round-to-nearest-even; FP32 accumulation, FP32 "
              "master weights and optimizer state; non-GEMM ops (norms, softmax, residual adds) in FP32; "
              "no loss scaling (BF16 has FP32's range).")


def _fp16_amp() -> Recipe:
    s = T("fp16")
    return Recipe(
        name="fp16-amp", input=s, weight=s, output=s, grad_output=s, grad_input=s, grad_weight=s,
        loss_scaling=LossScaling("dynamic", init_scale=2.0**16, growth_interval=2000),
        source="Micikevicius et al. 2018, Mixed Precision Training (as torch.amp + GradScaler)",
        notes="FP16 GEMM operands, outputs and gradients, nearest-even, FP32 accumulation and FP32 master weights; "
              "dynamic loss scaling with torch.amp.GradScaler's defaults (2^16, x2 every 2000 clean steps, "
              "x0.5 and skip on Inf/NaN).")


def _fp8_e5m2() -> Recipe:
    fwd = T("e5m2")
    sr = T("e5m2", "stochastic", rand_bits=8)
    return Recipe(
        name="fp8-e5m2", input=fwd, weight=fwd, output=fwd, grad_output=sr, grad_input=sr, grad_weight=sr,
        master=T("fp16", "stochastic", rand_bits=13), loss_scaling=LossScaling("enhanced"),
        exempt_first_last=True,
        source="Mellempudi et al. 2019, Mixed Precision Training With 8-bit Floating Point",
        notes="E5M2 for every GEMM role; round-to-nearest-even in forward, stochastic rounding (8 random bits, as "
              "Intel's FP8 emulation toolkit) for errors (grad_output and grad_input, which becomes the previous "
              "layer's error) and weight gradients; FP32 accumulation; FP16 master weights updated with "
              "stochastic rounding (13 random bits, as the toolkit); optimizer state FP32 (our choice); enhanced "
              "loss scaling with LossScaling's default floor schedule (the paper's exact schedule is not in its "
              "abstract: our reconstruction); first and last GEMM-like layers kept in FP32.")


def _fp8_hybrid() -> Recipe:
    fwd = T("e4m3", saturate=True, scaling="current")
    bwd = T("e5m2", saturate=True, scaling="current")
    return Recipe(
        name="fp8-hybrid", input=fwd, weight=fwd, grad_output=bwd,
        source="Micikevicius et al. 2022, FP8 Formats for Deep Learning; NVIDIA Transformer Engine 'HYBRID'",
        notes="E4M3 (OCP e4m3fn) for forward GEMM operands, E5M2 for the error (grad_output), each with per-tensor "
              "current amax scaling, margin 0, saturating (as Transformer Engine casts). GEMM outputs, grad_input "
              "and grad_weight stay in higher precision (FP32 here; TE writes BF16/FP32). Transformer Engine's "
              "default is *delayed* scaling; we use current scaling (exact for short runs; set scaling='delayed' "
              "to compare). FP32 accumulation and master weights; per-tensor scaling replaces loss scaling; "
              "no layer exempt (TE users often keep first/last in BF16: add exempt_first_last=True).")


def _fp8_ibm() -> Recipe:
    op = T("fp8-152")
    acc = T("fp16-169")
    return Recipe(
        name="fp8-ibm", input=op, weight=op, grad_output=op, output=acc, grad_input=acc, grad_weight=acc,
        accumulate="fp16-169", chunk=64, master=T("fp16-169", "stochastic"), optim_state=T("fp16-169"),
        loss_scaling=LossScaling("dynamic"), exempt_first_last=True,
        source="Wang et al. 2018, Training Deep Neural Networks with 8-bit Floating Point Numbers",
        notes="GEMM operands (activations, weights, errors) in FP8 (1,5,2) bias 15, nearest-even; accumulation in "
              "FP16 (1,6,9) bias 31 with chunk 64, GEMM results (outputs, grad_input, weight gradients) left in "
              "(1,6,9); weights updated in (1,6,9) with stochastic rounding and no FP32 copy; momentum in (1,6,9) "
              "(nearest). Not pinned down by the source: special values / overflow of (1,5,2) and (1,6,9) "
              "(IEEE-style, see `lowp formats`), loss scaling (we use dynamic), first/last layers (kept in FP32, "
              "as the paper keeps them in higher precision).")


def _int16_dfp() -> Recipe:
    s = T("dfp16")
    return Recipe(
        name="int16-dfp", input=s, weight=s, grad_output=s,
        source="Das et al. 2018, Mixed Precision Training of CNNs using Integer Operations",
        notes="Dynamic fixed point: 16-bit integers with one shared power-of-two exponent per tensor (from max|x|, "
              "nothing overflows), nearest rounding, for activations, weights and errors. The INT32 accumulation "
              "with overflow handling (partial sums converted to FP32 before they can overflow) is emulated by "
              "FP32 accumulation of the exact products, which differs from it only in low bits of long sums. "
              "GEMM outputs, grad_input and weight gradients FP32; FP32 master weights (as the paper).")


def _fixed16_sr() -> Recipe:
    sr = T("fixed<4,12>", "stochastic")
    nr = T("fixed<4,12>")
    return Recipe(
        name="fixed16-sr", input=nr, weight=nr, output=nr, grad_output=sr, grad_input=sr, grad_weight=sr,
        master=sr,
        source="Gupta et al. 2015, Deep Learning with Limited Numerical Precision",
        notes="16-bit fixed point <IL,FL> = <4,12>: range [-8, 8 - 2^-12], resolution 2^-12 (IL counts the sign). "
              "The paper uses word length 16 with FL=14 (MNIST) and FL up to 14 for CIFAR-10 and does not give one "
              "<IL,FL> for all nets; we take IL=4 so ReLU activations of normalised inputs fit. Forward roles "
              "nearest, gradients and the weight update stochastic (the paper's key point); products accumulated "
              "in high precision (FP32) and rounded once, as the paper; weights stored in <4,12> (no FP32 copy); "
              "optimizer state FP32 (our choice).")


def _mx(name: str, fwd: str, bwd: str, what: str) -> Recipe:
    return Recipe(
        name=name, input=T(fwd), weight=T(fwd), grad_output=T(bwd),
        source="OCP Microscaling Formats (MX) v1.0 spec; Rouhani et al. 2023, Microscaling Data Formats for Deep "
               "Learning",
        notes=f"{what} 32-element blocks share an E8M0 scale, taken along the GEMM reduction axis of each operand "
              "(a conv weight as (C_out, C_in*kh*kw); activations along channels; the error along its last axis, "
              "i.e. once, not re-blocked per backward GEMM: a simplification); elements saturate; nearest-even. "
              "GEMM outputs, grad_input, grad_weight, accumulation and master weights FP32.")


def _build() -> dict[str, Recipe]:
    e5 = _fp8_e5m2()
    rs = [
        Recipe(name="fp32", source="identity (plain FP32 PyTorch)",
               notes="every role FP32: emulate() swaps modules but runs torch's own kernels, bit for bit"),
        _bf16(), _fp16_amp(), e5,
        e5.replace(name="fp8-e5m2-noscale", loss_scaling=LossScaling("none"),
                   notes="fp8-e5m2 without loss scaling (shows gradient underflow). " + e5.notes),
        _fp8_hybrid(), _fp8_ibm(), _int16_dfp(), _fixed16_sr(),
        _mx("mxfp8", "mxfp8_e4m3", "mxfp8_e5m2", "MXFP8: E4M3 elements for activations and weights, E5M2 for errors;"),
        _mx("mxfp4", "mxfp4_e2m1", "mxfp8_e5m2", "MXFP4: E2M1 elements for activations and weights; errors in MXFP8 "
                                                 "E5M2 (FP4 errors do not train: our choice);"),
    ]
    return {r.name: r for r in rs}


RECIPES: dict[str, Recipe] = _build()


def recipe_names() -> list[str]:
    """Names of the built-in recipes."""
    return list(RECIPES)


def get_recipe(name: "str | Recipe | os.PathLike") -> Recipe:
    """A named recipe, a Recipe (returned as is), or one read from a ``.json`` file; unknown names raise
    ValueError listing the known ones."""
    if isinstance(name, Recipe):
        return name
    if isinstance(name, os.PathLike):
        name = os.fspath(name)
    if not isinstance(name, str):
        raise TypeError(f"a recipe is a name, a JSON path or a Recipe, got {type(name).__name__}")
    key = name.strip().lower()
    if key in RECIPES:
        return RECIPES[key]
    if name.endswith(".json") and os.path.isfile(name):
        try:
            with open(name, encoding="utf-8") as f:
                text = f.read()
        except (OSError, UnicodeDecodeError) as e:
            raise ValueError(f"cannot read recipe file {name!r}: {getattr(e, 'strerror', None) or e}") from None
        try:
            return Recipe.from_json(text)
        except ValueError as e:
            raise ValueError(f"recipe file {name!r}: {str(e).splitlines()[0]}") from None
    from . import extensions  # families and modifiers registered by higher layers

    if "+" in key:  # BASE+modifier[:arg][+modifier...]
        base, *mods = key.split("+")
        r = get_recipe(base)
        for mod in mods:
            mname, arg = extensions.split_transform(mod)
            if mname not in extensions.MODIFIERS:
                raise ValueError(f"unknown recipe modifier {mname!r} in {name!r}; registered: "
                                 f"{', '.join(extensions.MODIFIERS) or 'none'}")
            r = extensions.MODIFIERS[mname](r, arg)
        return r
    for pattern, factory in extensions.RECIPE_FAMILIES:
        m = pattern.fullmatch(key)
        if m:
            return factory(m)
    fams = [getattr(f, "__lowp_description__", p.pattern) for p, f in extensions.RECIPE_FAMILIES]
    raise ValueError(f"unknown recipe {name!r}; known recipes: {', '.join(RECIPES)}"
                     + (f"; families: {', '.join(fams)}" if fams else "") + " (or a path to a .json file)")
