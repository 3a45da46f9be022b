"""Named recipes reproducing the papers. Each one's ``source`` names the paper, ``notes`` every choice
the source (as available to us: mostly abstracts) does not pin down. ``get_recipe(name)`` also accepts a Recipe
(returned as is) or a path to a JSON file written by ``Recipe.to_json``.
"""
from __future__ import annotations

import os

from . import extensions, hardware
from .recipe import LossScaling, Recipe, TensorSpec

T = TensorSpec


def _bf16() -> Recipe:
    s = T("bf16")
    return Recipe(
        name="bf16", input=s, weight=s, output=s, grad_output=s, grad_input=s, grad_weight=s, attention=s,
        source="Kalamkar et al. 2019, A Study of BFLOAT16 for Deep Learning Training",
        notes="GEMM inputs, outputs and all gradients in BF16 with round-to-nearest-even; FP32 accumulation, FP32 "
              "master weights and optimizer state; non-GEMM ops (norms, softmax, residual adds) in FP32; "
              "no loss scaling (BF16 has FP32's range). Attention: q·kᵀ and P·v operands in BF16 too (the paper "
              "runs every GEMM in BF16).")


def _cpu_bf16() -> Recipe:
    s = T("bf16")
    return Recipe(
        name="cpu-bf16", input=s, weight=s, bias=s, output=s, grad_output=s, grad_input=s, grad_weight=s,
        attention=s,
        source="torch.autocast('cpu', torch.bfloat16) on this CPU (oneDNN BF16 GEMMs); tests/ops/test_operand_casts.py",
        notes="What this machine's native BF16 path computes: BF16 operands and a BF16 bias, FP32 accumulation, "
              "one rounding of the output to BF16 (the bf16 recipe keeps the bias in FP32); BF16 dy, dx, dW and "
              "bias gradient, as autocast's BF16 backward rounds them. Agreement with autocast measured here "
              "(Linear 256->512, batch 128): outputs 99.99% bit-identical (bf16 recipe: 94.6%), dx 99.99%, dW "
              "99.99%, bias gradient 100%; Conv2d outputs 99.99% (bf16 recipe: 92.5%). The rest differ in the "
              "last bit: oneDNN's FP32 summation order.")


def _fp16_amp() -> Recipe:
    s = T("fp16")
    return Recipe(
        name="fp16-amp", input=s, weight=s, output=s, grad_output=s, grad_input=s, grad_weight=s, attention=s,
        loss_scaling=LossScaling("dynamic", init_scale=2.0**16, growth_interval=2000),
        source="Micikevicius et al. 2018, Mixed Precision Training (as torch.amp + GradScaler)",
        notes="FP16 GEMM operands, outputs and gradients, nearest-even, FP32 accumulation and FP32 master weights; "
              "dynamic loss scaling with torch.amp.GradScaler's defaults (2^16, x2 every 2000 clean steps, "
              "x0.5 and skip on Inf/NaN). Attention products in FP16 (autocast runs matmul/SDPA in FP16).")


def _fp8_e5m2() -> Recipe:
    fwd = T("e5m2")
    sr = T("e5m2", "stochastic", rand_bits=8)
    return Recipe(
        name="fp8-e5m2", input=fwd, weight=fwd, output=fwd, grad_output=sr, grad_input=sr, grad_weight=sr,
        attention=fwd,
        master=T("fp16", "stochastic", rand_bits=13), loss_scaling=LossScaling("enhanced"),
        exempt_first_last=True,
        source="Mellempudi et al. 2019, Mixed Precision Training With 8-bit Floating Point",
        notes="E5M2 for every GEMM role; round-to-nearest-even in forward, stochastic rounding (8 random bits, as "
              "Intel's FP8 emulation toolkit) for errors (grad_output and grad_input, which becomes the previous "
              "layer's error) and weight gradients; FP32 accumulation; FP16 master weights updated with "
              "stochastic rounding (13 random bits, as the toolkit); optimizer state FP32 (our choice); enhanced "
              "loss scaling with LossScaling's default floor schedule (the paper's exact schedule is not in its "
              "abstract: our reconstruction); first and last GEMM-like layers kept in FP32. Attention operands E5M2 "
              "as every other GEMM operand (the paper's networks have no attention: our choice).")


def _fp8_hybrid() -> Recipe:
    fwd = T("e4m3", saturate=True, scaling="current")
    bwd = T("e5m2", saturate=True, scaling="current")
    return Recipe(
        name="fp8-hybrid", input=fwd, weight=fwd, grad_output=bwd, attention=fwd,
        source="Micikevicius et al. 2022, FP8 Formats for Deep Learning; NVIDIA Transformer Engine 'HYBRID'",
        notes="E4M3 (OCP e4m3fn) for forward GEMM operands, E5M2 for the error (grad_output), each with per-tensor "
              "current amax scaling, margin 0, saturating (as Transformer Engine casts). GEMM outputs, grad_input "
              "and grad_weight stay in higher precision (FP32 here; TE writes BF16/FP32). Transformer Engine's "
              "default is *delayed* scaling; we use current scaling (exact for short runs; set scaling='delayed' "
              "to compare). FP32 accumulation and master weights; per-tensor scaling replaces loss scaling; "
              "no layer exempt (TE users often keep first/last in BF16: add exempt_first_last=True). Attention: "
              "q·kᵀ and P·v operands E4M3 with current scaling, as TE's FP8 attention (fp8_dpa) and FlashAttention-3 "
              "FP8 run it; TE's default keeps attention in BF16: set attention=None for that.")


def _fp8_ibm() -> Recipe:
    op = T("fp8-152")
    acc = T("fp16-169")
    return Recipe(
        name="fp8-ibm", input=op, weight=op, grad_output=op, output=acc, grad_input=acc, grad_weight=acc,
        attention=op,
        accumulate="fp16-169", chunk=64, master=T("fp16-169", "stochastic"), optim_state=T("fp16-169"),
        loss_scaling=LossScaling("dynamic"), exempt_first_last=True,
        source="Wang et al. 2018, Training Deep Neural Networks with 8-bit Floating Point Numbers",
        notes="GEMM operands (activations, weights, errors) in FP8 (1,5,2) bias 15, nearest-even; accumulation in "
              "FP16 (1,6,9) bias 31 with chunk 64, GEMM results (outputs, grad_input, weight gradients) left in "
              "(1,6,9); weights updated in (1,6,9) with stochastic rounding and no FP32 copy; momentum in (1,6,9) "
              "(nearest). Not pinned down by the source: special values / overflow of (1,5,2) and (1,6,9) "
              "(IEEE-style, see `lowp formats`), loss scaling (we use dynamic), first/last layers (kept in FP32, "
              "as the paper keeps them in higher precision). Attention operands FP8 (1,5,2) like every GEMM operand "
              "(our choice: the paper has no attention).")


def _int16_dfp() -> Recipe:
    s = T("dfp16")
    return Recipe(
        name="int16-dfp", input=s, weight=s, grad_output=s, attention=s,
        source="Das et al. 2018, Mixed Precision Training of CNNs using Integer Operations",
        notes="Dynamic fixed point: 16-bit integers with one shared power-of-two exponent per tensor (from max|x|, "
              "nothing overflows), nearest rounding, for activations, weights and errors. The INT32 accumulation "
              "with overflow handling (partial sums converted to FP32 before they can overflow) is emulated by "
              "FP32 accumulation of the exact products, which differs from it only in low bits of long sums. "
              "GEMM outputs, grad_input and weight gradients FP32; FP32 master weights (as the paper). Attention "
              "operands DFP16 like every GEMM operand (our choice).")


def _fixed16_sr() -> Recipe:
    sr = T("fixed<2,14>", "stochastic")
    return Recipe(
        name="fixed16-sr", input=sr, weight=sr, output=sr, grad_output=sr, grad_input=sr, grad_weight=sr,
        attention=sr, master=sr,
        source="Gupta et al. 2015, Deep Learning with Limited Numerical Precision",
        notes="The paper's MNIST setting: word length 16, FL = 14, i.e. <IL,FL> = <2,14> (range [-2, 2 - 2^-14], "
              "resolution 2^-14, IL counts the sign, saturating), stochastic rounding of everything that is "
              "rounded: GEMM inputs, weights and outputs, errors, grad_input and weight gradients; the products "
              "are summed in high precision (FP32) and the sum rounded once, as the paper's wide accumulator; the "
              "weights themselves are stored in <2,14> (no FP32 copy) and each update w - lr·g is rounded "
              "stochastically. Optimizer state (the tasks' momentum buffer) FP32: our choice. "
              "RESULT (docs/results/fixed-point.md, 3 seeds, 10 epochs): does NOT reproduce on digits-mlp / "
              "mnist1d-cnn: 12.2% / 11.1% (FP32 96.8% / 94.5%; nearest alike, 11.4% / 13.7%). Their activations "
              "and logits (FP32 max |y| about 20 / 64) saturate at 2 and the weights drift to the rails: a range "
              "failure, not a rounding one. With <8,8> everywhere stochastic rounding is within 0.1 / 1.2 points "
              "of FP32 while nearest loses 2.1 / 85 points (nearest drops the errors and updates below half an "
              "ULP); use a derived recipe for that setting. Attention operands in <2,14> like every GEMM operand "
              "(our choice).")


def _build() -> dict[str, Recipe]:
    e5 = _fp8_e5m2()
    rs = [
        Recipe(name="fp32", source="identity (plain FP32 PyTorch)",
               notes="every role FP32: emulate() swaps modules but runs torch's own kernels, bit for bit; attention "
                     "native"),
        _bf16(), _fp16_amp(), e5,
        e5.replace(name="fp8-e5m2-noscale", loss_scaling=LossScaling("none"),
                   notes="fp8-e5m2 without loss scaling (shows gradient underflow). " + e5.notes),
        _fp8_hybrid(), _fp8_ibm(), _int16_dfp(), _fixed16_sr(),
        hardware.mxfp8(), hardware.mxfp4(), _cpu_bf16(), *hardware.hardware_recipes(),
    ]
    return {r.name: r for r in rs}


RECIPES: dict[str, Recipe] = _build()
for _name, _fn in hardware.MODIFIERS.items():
    extensions.register_modifier(_name, _fn)


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
    extensions.load_plugins()  # families and modifiers registered by higher layers
    if "+" in key:  # BASE+modifier[:arg][+modifier...]; a technique without a modifier appends its transform
        base, *mods = key.split("+")
        r = get_recipe(base)
        for mod in mods:
            mname, arg = extensions.split_transform(mod)
            if mname in extensions.MODIFIERS:
                r = extensions.MODIFIERS[mname](r, arg)
            elif mname in extensions.TECHNIQUES:
                r = r.replace(name=f"{r.name}+{mod}", transforms=tuple(r.transforms) + (mod,))
            else:
                known = sorted(set(extensions.MODIFIERS) | set(extensions.TECHNIQUES))
                raise ValueError(f"unknown recipe modifier {mname!r} in {name!r}; registered: "
                                 f"{', '.join(known) or 'none'}")
        return r
    for pattern, factory in extensions.RECIPE_FAMILIES:
        m = pattern.fullmatch(key)
        if m:
            return factory(m)
    fams = [getattr(f, "__lowp_description__", p.pattern) for p, f in extensions.RECIPE_FAMILIES]
    raise ValueError(f"unknown recipe {name!r}; known recipes: {', '.join(RECIPES)}"
                     + (f"; families: {', '.join(fams)}" if fams else "") + " (or a path to a .json file)")
