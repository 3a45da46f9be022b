"""Quantization-aware training as a model transform, and its recipe families (Choi et al. 2018,
PACT; Mishra et al. 2018, WRPN; Zhou et al. 2016, DoReFa).

``apply_qat(model, cfg)`` switches every ``nn.Linear`` / ``nn.Conv1d`` / ``nn.Conv2d`` (plain or ``lowp.emulate``'s
FP32 twin) *in place* to a QAT twin class: the same module, same parameters, same state_dict keys, plus two child
modules ``qat_act`` (quantizes the layer's input: PACT, clip-[0,1] or integer) and ``qat_weight`` (quantizes the
weight in the forward pass: DoReFa, WRPN, FGQ ternary or integer), both straight-through. The activation
quantizer sits on each GEMM's *input*, i.e. on the output of the previous activation (after pooling, with which
clipping and rounding commute), so it quantizes exactly the GEMM operands whatever the model's forward looks like.
The model's inputs are left alone (the first layer's input is data); the first and the last GEMM-like layer use
``first_last_bits`` (8 by default, as the papers keep them in higher precision; None keeps them FP32) for their
weights and, for the last, its input. ``remove_qat(model)`` switches back (dropping the α parameters).

Recipes (``lowp.get_recipe``) and transforms (``recipe.transforms``, applied by ``lowp.emulate``):

=====================  ==================================  ================================================
recipe                 transform                           what
=====================  ==================================  ================================================
``pact-wKaJ``          ``pact:K:J``                        DoReFa K-bit weights, PACT J-bit activations
``dorefa-wKaJ``        ``dorefa:K:J``                      DoReFa K-bit weights, clip-[0,1] J-bit activations
``wrpn-wKaJ-xF``       ``wrpn:K:J:F``                      widen ×F, WRPN K-bit weights, clip-[0,1] J-bit acts
``ternary-ft-gN[-aJ]`` ``ternary-ft:N[:J]``                FGQ ternary weights (groups of N), J-bit int acts
=====================  ==================================  ================================================

Transform options, appended as ``:key=value`` (or ``:flag``): ``first-last=N|fp32``, ``scale=fan-in|none``
(``QATConfig.weight_scale``), and for PACT ``alpha=A0``, ``decay=L``, ``per-channel`` — e.g.
``pact:2:2:alpha=2:per-channel``. DoReFa weights are scaled by 1/sqrt(fan_in) by default (see ``ScaledWeight``:
the papers' networks have BatchNorm, which absorbs that scale; without it they do not train), WRPN weights are not
(the paper's absolute [-1, 1] clip trains well as is).

The recipes leave every GEMM role FP32 (the transform does the quantizing), so ``emulate`` runs torch's kernels;
a recipe that sets GEMM roles *and* a QAT transform is rejected (they do not compose yet).
Note for training loops: the transforms add parameters (PACT α) and WRPN widening re-shapes parameters (same
Parameter objects), so build the optimizer *after* ``emulate``/``apply_qat`` or α is not trained.
"""
from __future__ import annotations

import dataclasses
import fnmatch
import math

import torch
from torch import nn
import torch.nn.functional as F

from ..ops.modules import PLAIN
from ..recipes import extensions
from ..recipes.recipe import ROLES, Recipe
from ..recipes.technique import FunctionTechnique, LayerPlot, ReportSection
from .dorefa import DoReFaWeight, UnitClipAct, check_bits
from .pact import PACT, pact_alphas
from .ternary_ft import IntQuant, TernaryWeight
from .wrpn import WRPNWeight, widen

WEIGHT_KINDS = ("dorefa", "wrpn", "ternary", "int", "none")
ACT_KINDS = ("pact", "unit", "int", "none")
WEIGHT_SCALES = ("fan-in", "none")
PACT_ALPHA_DECAY = 2e-4  # the recipes' L2 coefficient on alpha (our choice; see pact.py)


@dataclasses.dataclass(frozen=True)
class QATConfig:
    """What ``apply_qat`` does. weight: dorefa | wrpn | ternary | int | none; act: pact | unit (clip [0,1]) |
    int | none; bits for each; ``first_last_bits`` for the first/last GEMM (None: leave them FP32); ``group``
    for ternary weights; PACT's ``alpha_init``, ``per_channel`` and ``alpha_decay``; ``widen`` factor (WRPN)."""

    weight: str
    weight_bits: int
    act: str
    act_bits: int
    first_last_bits: int | None = 8
    group: int = 64
    per_channel: bool = False
    alpha_init: "float | str" = "data"
    alpha_decay: float = 0.0
    widen: int = 1
    weight_scale: str | None = None
    exempt: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.weight not in WEIGHT_KINDS:
            raise ValueError(f"unknown QAT weight quantizer {self.weight!r}; valid: {', '.join(WEIGHT_KINDS)}")
        if self.act not in ACT_KINDS:
            raise ValueError(f"unknown QAT activation quantizer {self.act!r}; valid: {', '.join(ACT_KINDS)}")
        check_bits("weight bits", self.weight_bits, lo=2 if self.weight in ("wrpn", "int") else 1)
        check_bits("activation bits", self.act_bits, lo=2 if self.act == "int" else 1)
        if self.first_last_bits is not None:
            check_bits("first/last layer bits", self.first_last_bits, lo=2)
        check_bits("widening factor", self.widen, lo=1, hi=64)
        if self.weight_scale is None:  # DoReFa: fan-in (needed without BatchNorm); WRPN: the paper's absolute clip
            object.__setattr__(self, "weight_scale", "fan-in" if self.weight == "dorefa" else "none")
        if self.weight_scale not in WEIGHT_SCALES:
            raise ValueError(f"unknown weight_scale {self.weight_scale!r}; valid: {', '.join(WEIGHT_SCALES)}")
        object.__setattr__(self, "exempt", tuple(self.exempt))


class ScaledWeight(nn.Module):
    """w_q = Q(c·w) / c with a fixed per-layer constant c (c = sqrt(fan_in) for weight_scale="fan-in").

    DoReFa and WRPN map weights onto a grid in [-1, 1] whatever the layer's fan-in; the papers' networks follow
    every GEMM with BatchNorm, which absorbs the resulting scale. A network without BatchNorm (mnist1d-cnn) then
    sees pre-activations sqrt(fan_in) times too large and does not train. With c = sqrt(fan_in) the quantizer
    sees the weights in units of torch's default initialisation bound 1/sqrt(fan_in) and the quantized weights
    come back at the initial scale: still one grid of 2^k levels times one per-layer scale (free in hardware:
    folded into the accumulator's rescaling, as BatchNorm would be)."""

    def __init__(self, inner: nn.Module, c: float) -> None:
        super().__init__()
        self.inner = inner
        self.c = float(c)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return self.inner(w * self.c) / self.c

    def extra_repr(self) -> str:
        return f"c={self.c:.4g}"


class _QATLinear(nn.Linear):
    _lowp_leaf = True  # runs its own (fake-quantized) GEMM: lowp.emulate's capture leaves it alone

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(self.qat_act(x), self.qat_weight(self.weight), self.bias)


class _QATConv1d(nn.Conv1d):
    _lowp_leaf = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(self.qat_act(x), self.qat_weight(self.weight), self.bias)


class _QATConv2d(nn.Conv2d):
    _lowp_leaf = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(self.qat_act(x), self.qat_weight(self.weight), self.bias)


QAT_TWINS = {nn.Linear: _QATLinear, nn.Conv1d: _QATConv1d, nn.Conv2d: _QATConv2d}
QAT_BASE = {v: k for k, v in QAT_TWINS.items()}


def _base_type(m: nn.Module) -> type | None:
    t = type(m)
    t = QAT_BASE.get(t, PLAIN.get(t, t))
    return t if t in QAT_TWINS else None


def _weight_quantizer(kind: str, bits: int, cfg: QATConfig) -> nn.Module:
    if kind == "dorefa":
        return DoReFaWeight(bits)
    if kind == "wrpn":
        return WRPNWeight(bits)
    if kind == "ternary":
        return TernaryWeight(cfg.group)
    if kind == "int":
        return IntQuant(bits)
    return nn.Identity()


def _act_quantizer(kind: str, bits: int, cfg: QATConfig, m: nn.Module) -> nn.Module:
    if kind == "pact":
        lin = isinstance(m, nn.Linear)
        ch = (m.in_features if lin else m.in_channels) if cfg.per_channel else None
        return PACT(bits, alpha_init=cfg.alpha_init, channels=ch, alpha_decay=cfg.alpha_decay,
                    channel_dim=-1 if lin else 1)
    if kind == "unit":
        return UnitClipAct(bits)
    if kind == "int":
        return IntQuant(bits)
    return nn.Identity()


def qat_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Qualified name → module of every layer currently switched to a QAT twin."""
    return {n: m for n, m in model.named_modules() if type(m) in QAT_BASE}


def apply_qat(model: nn.Module, spec: "QATConfig | Recipe | str") -> nn.Module:
    """Apply quantization-aware training to ``model`` in place and return it.

    ``spec``: a :class:`QATConfig`; or a Recipe / recipe name, whose QAT transforms (``pact``, ``dorefa``,
    ``wrpn``, ``ternary-ft``) are applied (other transforms of the recipe are not: use ``lowp.emulate`` for the
    whole recipe). Applying again replaces the quantizers (PACT α restarts at ``alpha_init``)."""
    if not isinstance(spec, QATConfig):
        from ..recipes.library import get_recipe  # noqa: PLC0415

        recipe = get_recipe(spec)
        entries = [e for e in recipe.transforms if extensions.split_transform(e)[0] in _TRANSFORMS]
        if not entries:
            raise ValueError(f"recipe {recipe.name!r} has no QAT transform ({', '.join(_TRANSFORMS)})")
        for e in entries:
            name, args = extensions.split_transform(e)
            model = _TRANSFORMS[name](model, recipe, args)
        return model
    cfg = spec
    if cfg.widen > 1:
        widen(model, cfg.widen)
    named = [(n, m) for n, m in model.named_modules() if _base_type(m) is not None]
    if not named:
        raise ValueError("apply_qat: the model has no Linear/Conv1d/Conv2d layer")
    first, last = named[0][0], named[-1][0]
    fl = cfg.first_last_bits
    for name, m in named:
        if any(fnmatch.fnmatchcase(name, p) for p in cfg.exempt):
            continue
        edge = name in (first, last)
        if edge and fl is None:
            continue
        wkind = "int" if edge else cfg.weight  # edges: plain symmetric integers (DoReFa/WRPN rescale the weights)
        wq = _weight_quantizer(wkind, fl if edge else cfg.weight_bits, cfg)
        if cfg.weight_scale == "fan-in" and wkind in ("dorefa", "wrpn"):
            wq = ScaledWeight(wq, math.sqrt(m.weight[0].numel()))
        aq = nn.Identity() if name == first else _act_quantizer(cfg.act, fl if edge else cfg.act_bits, cfg, m)
        m.__dict__.pop("lowp_ctx", None)  # an FP32 emulated twin becomes a QAT twin (roles checked by caller)
        m.__class__ = QAT_TWINS[_base_type(m)]
        m.qat_act = aq
        m.qat_weight = wq
    return model


def remove_qat(model: nn.Module) -> nn.Module:
    """Switch QAT twins back to plain torch modules (same parameters; the quantizers and α are dropped)."""
    for m in model.modules():
        if type(m) in QAT_BASE:
            m.__class__ = QAT_BASE[type(m)]
            for k in ("qat_act", "qat_weight"):
                m._modules.pop(k, None)
    return model


# ----------------------------------------------------------------------------------------------- transforms

def _check_recipe(recipe: Recipe | None, entry: str) -> tuple[str, ...]:
    if recipe is None:
        return ()
    if any(getattr(recipe, r) is not None for r in ROLES) or recipe.accumulate is not None:
        raise ValueError(f"model transform {entry!r} runs the GEMMs in FP32 and does not compose with emulated GEMM "
                         f"roles (recipe {recipe.name!r} sets some); use a recipe without them")
    return tuple(recipe.exempt)


_COMMON_OPTS = ("first-last", "scale")


def _parse(name: str, args: str | None, n_min: int, n_max: int, opts: tuple[str, ...] = ()) -> tuple[list[int], dict]:
    """'4:4:alpha=2:per-channel' -> ([4, 4], {'alpha': '2', 'per-channel': ''}); options must be in ``opts``."""
    parts = [] if not args else args.split(":")
    nums = [p for p in parts if p.isdigit()]
    kv = dict(p.partition("=")[::2] for p in parts if not p.isdigit())
    allowed = opts + _COMMON_OPTS
    bad = [k for k in kv if k not in allowed]
    if bad or not n_min <= len(nums) <= n_max or parts[:len(nums)] != nums:
        raise ValueError(f"model transform {name!r} takes {n_min}..{n_max} integers then options "
                         f"({', '.join(allowed)}) separated by ':', got {args!r}")
    return [int(p) for p in nums], kv


def _common(kv: dict, recipe: Recipe | None, entry: str) -> dict:
    out: dict = {"exempt": _check_recipe(recipe, entry)}
    try:
        if "first-last" in kv:
            out["first_last_bits"] = None if kv["first-last"] == "fp32" else int(kv["first-last"])
        if "scale" in kv:
            out["weight_scale"] = kv["scale"]
        if "alpha" in kv:
            out["alpha_init"] = "data" if kv["alpha"] == "data" else float(kv["alpha"])
        if "decay" in kv:
            out["alpha_decay"] = float(kv["decay"])
    except ValueError as e:
        raise ValueError(f"model transform {entry!r}: bad option value ({e})") from None
    if "per-channel" in kv:
        out["per_channel"] = True
    return out


def _pact_t(model, recipe, args):
    (w, a), kv = _parse("pact", args, 2, 2, ("per-channel", "alpha", "decay"))
    kw = {"alpha_decay": PACT_ALPHA_DECAY, **_common(kv, recipe, f"pact:{args}")}
    return apply_qat(model, QATConfig("dorefa", w, "pact", a, **kw))


def _dorefa_t(model, recipe, args):
    (w, a), kv = _parse("dorefa", args, 2, 2)
    return apply_qat(model, QATConfig("dorefa", w, "unit", a, **_common(kv, recipe, f"dorefa:{args}")))


def _wrpn_t(model, recipe, args):
    (w, a, x), kv = _parse("wrpn", args, 3, 3)
    return apply_qat(model, QATConfig("wrpn", w, "unit", a, widen=x, **_common(kv, recipe, f"wrpn:{args}")))


def _ternary_t(model, recipe, args):
    nums, kv = _parse("ternary-ft", args, 1, 2)
    group = check_bits("ternary group", nums[0], lo=1, hi=4096)
    act, abits = ("int", nums[1]) if len(nums) == 2 else ("none", 8)
    return apply_qat(model, QATConfig("ternary", 2, act, abits, group=group,
                                      **_common(kv, recipe, f"ternary-ft:{args}")))


_TRANSFORMS = {"pact": _pact_t, "dorefa": _dorefa_t, "wrpn": _wrpn_t, "ternary-ft": _ternary_t}

# ------------------------------------------------------------------------------------------------- recipes

_FL = "First and last GEMM-like layers: 8-bit symmetric integer weights, per-tensor amax scale (the last one also " \
      "8-bit input), the model input unquantized (as the papers keep first/last layers in higher precision; " \
      "DoReFa/WRPN weights there would fix the scale of the logits: measured -7 points on digits-mlp). "


def _bits(w: str, a: str, wmin: int = 1) -> tuple[int, int]:
    return check_bits("weight bits", int(w), lo=wmin), check_bits("activation bits", int(a))


def _qat_family(m) -> Recipe:
    kind, w, a = m.group(1), *_bits(m.group(2), m.group(3))
    name = m.group(0)
    if kind == "pact":
        return Recipe(
            name=name, transforms=(f"pact:{w}:{a}",),
            source="Choi et al. 2018, PACT: Parameterized Clipping Activation for Quantized Neural Networks "
                   "(weights: Zhou et al. 2016, DoReFa-Net)",
            notes=f"Activations: PACT y = clip(x, 0, alpha) on a {a}-bit grid of step alpha/(2^{a}-1), one alpha per "
                  "layer, initialised from the data (the first batch's 99.9th percentile of max(x, 0); the paper's "
                  "alpha0 = 10 with the transform option alpha=10), straight-through rounding, dy/dalpha = 1 where x >= alpha; L2 on alpha with "
                  f"coefficient {PACT_ALPHA_DECAY} (our choice) applied inside PACT's backward. Weights: DoReFa "
                  f"{w}-bit " + ("sign(w)*E|w|. " if w == 1 else "2*quantize_k(tanh(w)/(2 max|tanh w|) + 1/2) - 1. ")
                  + _FL + "GEMMs, gradients and master weights FP32. Build the optimizer after emulate (alpha "
                  "is a new parameter).")
    return Recipe(
        name=name, transforms=(f"dorefa:{w}:{a}",),
        source="Zhou et al. 2016, DoReFa-Net (the clipped-activation baseline of Choi et al. 2018, PACT)",
        notes=f"Weights DoReFa {w}-bit (as pact-w{w}a{a}); activations clip(x, 0, 1) on a {a}-bit grid, "
              "straight-through rounding, gradient 0 outside [0, 1]. " + _FL + "GEMMs, gradients and master "
              "weights FP32.")


def _wrpn_family(m) -> Recipe:
    w, a = _bits(m.group(1), m.group(2), wmin=2)
    x = check_bits("widening factor", int(m.group(3)), lo=1, hi=64)
    return Recipe(
        name=m.group(0), transforms=(f"wrpn:{w}:{a}:{x}",),
        source="Mishra et al. 2017, WRPN: Wide Reduced-Precision Networks",
        notes=f"Every layer's width multiplied by {x} (except the model's inputs and outputs; lowp.techniques.wrpn."
              "widen, in place, re-initialised: WRPN trains from scratch); activations clip(x, 0, 1) on a "
              f"{a}-bit grid; weights clip(w, -1, 1), sign plus {w - 1} magnitude bits; straight-through rounding. "
              + _FL + "GEMMs, gradients and master weights FP32.")


def _ternary_family(m) -> Recipe:
    group = check_bits("ternary group", int(m.group(1)), lo=1, hi=4096)
    a = m.group(2)
    if a is not None:
        check_bits("activation bits", int(a), lo=2)
    return Recipe(
        name=m.group(0), transforms=(f"ternary-ft:{group}" + (f":{a}" if a else ""),),
        source="Mellempudi et al. 2017, Ternary Neural Networks with Fine-Grained Quantization",
        notes=f"Fine-tuning with FGQ ternary weights (exact per-group optimum, groups of {group} along the reduction "
              "dims), straight-through to FP32 latent weights; start it from trained FP32 weights. "
              + (f"Activations: {a}-bit symmetric integers, per-tensor amax scale. " if a else "Activations FP32. ")
              + "First and last GEMM-like layers: 8-bit integer weights (per-tensor amax scale).")


class PACTTechnique(FunctionTechnique):
    """The ``pact:W:A`` transform with its history extra ``pact_alpha`` (layer -> clipping level α at the end of
    each epoch, the mean over channels for per-channel α) and a report section plotting it."""

    def epoch_metrics(self, model: nn.Module, sample) -> dict:
        alphas = pact_alphas(model)
        return {"pact_alpha": {k: sum(v) / len(v) for k, v in alphas.items()}} if alphas else {}

    def report_section(self, runs) -> ReportSection:
        return ReportSection("PACT clipping levels", "<p>α per layer at the end of each epoch (mean over channels for "
                             "per-channel α).</p>", (LayerPlot("pact_alpha", "PACT clipping level α", "pact-alpha.png",
                                                              "PACT alpha per layer over training"),))


def register() -> None:
    """Register the transforms (``pact`` with its epoch metric and report section) and the recipe families
    (idempotent)."""
    for name, fn in _TRANSFORMS.items():
        cls = PACTTechnique if name == "pact" else FunctionTechnique
        extensions.register_technique(cls(name, fn, remove_qat))
    known = {p.pattern for p, _ in extensions.RECIPE_FAMILIES}
    fams = [(r"(pact|dorefa)-w(\d+)a(\d+)", _qat_family, "pact-wKaJ, dorefa-wKaJ (K-bit weights, J-bit activations)"),
            (r"wrpn-w(\d+)a(\d+)-x(\d+)", _wrpn_family, "wrpn-wKaJ-xF (widening F)"),
            (r"ternary-ft-g(\d+)(?:-a(\d+))?", _ternary_family, "ternary-ft-gN[-aJ] (FGQ ternary fine-tuning)")]
    for pat, fn, desc in fams:
        if pat not in known:
            extensions.register_recipe_family(pat, fn, description=desc)


register()
