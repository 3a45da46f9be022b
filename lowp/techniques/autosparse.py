"""AutoSparse: learnable-threshold pruning with gradient annealing (Kundu et al. 2023).

Each Linear/Conv1d/Conv2d weight W is reparametrised (``torch.nn.utils.parametrize``) as

    W̃ = sign(W) · ReLU_α(|W| − T),   T = sigmoid(s),

with a learnable threshold logit s per layer (or per output channel). The forward is the plain ReLU (a weight with
|W| ≤ T is exactly zero), but **gradient annealing** (GA) changes its derivative:

    ReLU_α'(x) = 1 if x > 0 else α,

so a masked weight still receives α times its gradient (∂W̃/∂W = 1 kept, α masked; ∂W̃/∂T = −sign(W) kept,
−α·sign(W) masked) and can grow back. α decays non-linearly to 0 over training (:class:`AlphaSchedule`); with α = 0
this is plain learnable-threshold pruning (STR-like), the "no annealing" baseline.

Schedule. The seeds hold only the paper's abstract ("gradients of masked weights are scaled down in a non-linear
manner"), so the schedule could not be verified. The default is our reconstruction, with the sigmoid
term normalised so that α reaches exactly 0 at the end (unnormalised it ends at α0·sigmoid(−6) ≈ 0.0025·α0):

    α_e = α0 · max((1 + cos(π p)) / 2, (σ(6) − σ(12 p − 6)) / (σ(6) − σ(−6))),   p = min(1, e / (end · E)),

α0 = 0.5, end = 1 (α reaches 0 after ``end`` of the E epochs). Other kinds: ``cosine``, ``linear``, ``constant``.

Target sparsity (our addition, not the paper's: AutoSparse reaches a sparsity through α0, the threshold init and
weight decay). With ``target`` set, a controller shared by the model's layers nudges every threshold logit before
each training forward by ``gain · (S*(e) − S)`` where S is the current overall sparsity of the pruned weights and
S*(e) = target · (1 − (1 − min(1, e / (ramp·E)))³) (Zhu & Gupta's cubic ramp). The push is the same for every
layer, so how sparsity is spread over layers is still decided by the weights and the learned thresholds.
``target=None`` leaves the thresholds to the loss alone.

Use:

    model = lowp.emulate(model, "bf16+autosparse:0.8")     # or apply_autosparse(model, AutoSparseConfig(...))
    opt = ...(model.parameters())                          # build the optimizer AFTER: the thresholds are new params
    for epoch in range(E):
        lowp.techniques.autosparse.on_epoch(model, epoch, E)   # sets α and the target ramp; no-op without AutoSparse
        ... train ...
    lowp.techniques.flops.sparsity_report(model, x[:1])

Recipe modifier ``RECIPE+autosparse[:TARGET][:key=value...]`` (e.g. ``bf16+autosparse:0.8``) appends the transform
``autosparse[:...]`` to the recipe; options: ``alpha0=``, ``schedule=cos-sigmoid|cosine|linear|constant``,
``end=``, ``ramp=``, ``gain=``, ``s0=`` (initial logit), ``channel`` (per-output-channel thresholds),
``skip-first-last``; TARGET may be ``none``. State dict: ``...parametrizations.weight.original`` (the dense W) and
``...parametrizations.weight.0.s``. ``lowp.restore`` does not undo it (transforms are not undone): call
:func:`remove_autosparse` first (``bake=True`` keeps W̃). Calling ``emulate`` again on an AutoSparse model raises.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

from ..recipes import extensions
from ..recipes.recipe import Recipe
from ..recipes.technique import Column, EpochMetrics, LayerPlot, ReportSection, Technique
from .flops import cumulative_train_flops_ratio, gemm_layers, sparsity_report

SCHEDULES = ("cos-sigmoid", "cosine", "linear", "constant")
GRANULARITIES = ("layer", "channel")


def _sig(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


@dataclasses.dataclass(frozen=True)
class AlphaSchedule:
    """Gradient-annealing factor α as a function of the epoch (see the module docstring for the formulas)."""

    alpha0: float = 0.5
    kind: str = "cos-sigmoid"
    end: float = 1.0  # fraction of the epochs after which α = 0

    def __post_init__(self) -> None:
        if self.kind not in SCHEDULES:
            raise ValueError(f"unknown α schedule {self.kind!r}; valid: {', '.join(SCHEDULES)}")
        if not 0.0 <= self.alpha0 <= 1.0:
            raise ValueError(f"alpha0 must be in [0, 1], got {self.alpha0!r}")
        if not 0.0 < self.end <= 1.0:
            raise ValueError(f"end must be in (0, 1], got {self.end!r}")

    def __call__(self, epoch: float, epochs: int) -> float:
        if epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {epochs!r}")
        if self.kind == "constant":
            return float(self.alpha0)
        p = min(1.0, max(0.0, epoch / (self.end * epochs)))
        if self.kind == "linear":
            f = 1.0 - p
        elif self.kind == "cosine":
            f = (1.0 + math.cos(math.pi * p)) / 2.0
        else:
            sig = (_sig(6.0) - _sig(12.0 * p - 6.0)) / (_sig(6.0) - _sig(-6.0))
            f = max((1.0 + math.cos(math.pi * p)) / 2.0, sig)
        return float(self.alpha0 * min(1.0, max(0.0, f)))


@dataclasses.dataclass(frozen=True)
class AutoSparseConfig:
    """AutoSparse options (see the module docstring). ``target`` None: thresholds learned from the loss only."""

    target: float | None = 0.8
    schedule: AlphaSchedule = AlphaSchedule()
    granularity: str = "layer"
    s0: float = -6.0
    ramp: float = 0.5
    gain: float = 1.0
    skip_first_last: bool = False
    exempt: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.target is not None and not 0.0 <= self.target < 1.0:
            raise ValueError(f"target sparsity must be in [0, 1) or None, got {self.target!r}")
        if self.granularity not in GRANULARITIES:
            raise ValueError(f"granularity must be one of {GRANULARITIES}, got {self.granularity!r}")
        if not 0.0 < self.ramp <= 1.0:
            raise ValueError(f"ramp must be in (0, 1], got {self.ramp!r}")
        if not self.gain >= 0.0:
            raise ValueError(f"gain must be >= 0, got {self.gain!r}")
        object.__setattr__(self, "exempt", tuple(self.exempt))

    def target_at(self, epoch: float, epochs: int) -> float | None:
        """S*(e): the cubic ramp from 0 to ``target`` over the first ``ramp`` of the epochs."""
        if self.target is None:
            return None
        p = min(1.0, max(0.0, epoch / (self.ramp * epochs)))
        return self.target * (1.0 - (1.0 - p) ** 3)


# ---------------------------------------------------------------------------------------------------- the op

class _AnnealedReLU(torch.autograd.Function):
    """ReLU forward; backward passes the gradient where x > 0 and α times it where x ≤ 0."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, alpha: float) -> torch.Tensor:  # type: ignore[override]
        keep = x > 0
        ctx.save_for_backward(keep)
        ctx.alpha = float(alpha)
        return torch.where(keep, x, torch.zeros((), dtype=x.dtype, device=x.device))

    @staticmethod
    def backward(ctx, g: torch.Tensor):  # type: ignore[override]
        (keep,) = ctx.saved_tensors
        if ctx.alpha == 0.0:
            return torch.where(keep, g, torch.zeros((), dtype=g.dtype, device=g.device)), None
        return torch.where(keep, g, g * ctx.alpha), None


def annealed_relu(x: torch.Tensor, alpha: float) -> torch.Tensor:
    """ReLU whose derivative is 1 for x > 0 and ``alpha`` for x ≤ 0 (gradient annealing)."""
    return _AnnealedReLU.apply(x, alpha)


def sparse_weight(w: torch.Tensor, s: torch.Tensor, alpha: float) -> torch.Tensor:
    """W̃ = sign(W) · ReLU_α(|W| − sigmoid(s)); ``s`` broadcasts against ``w`` (scalar or per output channel)."""
    return torch.sign(w) * annealed_relu(w.abs() - torch.sigmoid(s), alpha)


class _Controller:
    """Mutable state shared by one model's AutoSparse layers: α, the current target, the layers' latest kept
    counts (for the overall sparsity the target controller steers)."""

    def __init__(self, config: AutoSparseConfig) -> None:
        self.config = config
        self.alpha = config.schedule(0, 1)
        self.target_now: float | None = config.target_at(0, 1)
        self.kept: dict[int, tuple[int, int]] = {}  # id(layer) -> (kept, numel)

    def sparsity(self) -> float:
        kept = sum(k for k, _ in self.kept.values())
        n = sum(n for _, n in self.kept.values())
        return 1.0 - kept / n if n else 0.0


class AutoSparseWeight(nn.Module):
    """Parametrization W ↦ sign(W)·ReLU_α(|W| − sigmoid(s)) with a learnable threshold logit ``s``."""

    def __init__(self, weight: torch.Tensor, controller: _Controller) -> None:
        super().__init__()
        cfg = controller.config
        shape = (weight.shape[0],) + (1,) * (weight.dim() - 1) if cfg.granularity == "channel" else ()
        self.s = nn.Parameter(torch.full(shape, float(cfg.s0), dtype=weight.dtype, device=weight.device))
        self.controller = controller

    @property
    def alpha(self) -> float:
        return self.controller.alpha

    def threshold(self) -> torch.Tensor:
        return torch.sigmoid(self.s.detach())

    def mask(self, w: torch.Tensor) -> torch.Tensor:
        """Boolean mask of kept weights (|W| > sigmoid(s))."""
        return w.detach().abs() > self.threshold()

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return sparse_weight(w, self.s, self.alpha)

    def extra_repr(self) -> str:
        return f"granularity={self.controller.config.granularity}, alpha={self.alpha:g}"


def _pre_hook(module: nn.Module, args: Any) -> None:
    """Before each training forward: record this layer's kept count and steer its threshold toward the target."""
    p = _param(module)
    if p is None:
        return
    ctl = p.controller
    w = module.parametrizations.weight.original
    steer = module.training and torch.is_grad_enabled() and ctl.target_now is not None and ctl.config.gain > 0
    with torch.no_grad():
        ctl.kept[id(p)] = (int(p.mask(w).sum()), w.numel())
        if steer:
            p.s.add_(ctl.config.gain * (ctl.target_now - ctl.sparsity()))
            ctl.kept[id(p)] = (int(p.mask(w).sum()), w.numel())

_HOOK_ATTR = "_lowp_autosparse_hook"


def _param(module: nn.Module) -> AutoSparseWeight | None:
    if not parametrize.is_parametrized(module, "weight"):
        return None
    for p in module.parametrizations.weight:
        if isinstance(p, AutoSparseWeight):
            return p
    return None


def autosparse_layers(model: nn.Module) -> dict[str, AutoSparseWeight]:
    """Qualified layer name -> its AutoSparse parametrization (empty for a model without AutoSparse)."""
    out = {}
    for n, m in model.named_modules():
        p = _param(m)
        if p is not None:
            out[n] = p
    return out


def dense_grad_weight(module: nn.Module) -> bool:
    """Whether the layer's weight-gradient GEMM is dense: an AutoSparse layer while α > 0 (masked weights get α·g).
    A plain or magnitude-masked layer: False (its masked weights get no gradient)."""
    p = _param(module)
    return p is not None and p.alpha > 0.0


def apply_autosparse(model: nn.Module, config: AutoSparseConfig | None = None) -> nn.Module:
    """Reparametrise every Linear/Conv1d/Conv2d weight (except ``exempt`` fnmatch patterns and, with
    ``skip_first_last``, the first and last) with AutoSparse, in place; returns the model. One controller per call."""
    import fnmatch

    config = config or AutoSparseConfig()
    if autosparse_layers(model):
        raise ValueError("model already has AutoSparse layers; call remove_autosparse(model) first")
    layers = gemm_layers(model)
    if config.skip_first_last and layers:
        layers = layers[1:-1]
    layers = [(n, m) for n, m in layers if not any(fnmatch.fnmatchcase(n, p) for p in config.exempt)]
    if not layers:
        raise ValueError("apply_autosparse: no Linear/Conv1d/Conv2d layer to prune")
    ctl = _Controller(config)
    for _, m in layers:
        parametrize.register_parametrization(m, "weight", AutoSparseWeight(m.weight.detach(), ctl))
        setattr(m, _HOOK_ATTR, m.register_forward_pre_hook(_pre_hook))
        w = m.parametrizations.weight.original
        ctl.kept[id(_param(m))] = (int(_param(m).mask(w).sum()), w.numel())
    return model


def remove_autosparse(model: nn.Module, bake: bool = True) -> nn.Module:
    """Remove AutoSparse from every layer: ``bake=True`` keeps the sparse W̃ as the plain weight, False the dense W."""
    for _, m in model.named_modules():
        if _param(m) is None:
            continue
        handle = m.__dict__.pop(_HOOK_ATTR, None)
        if handle is not None:
            handle.remove()
        parametrize.remove_parametrizations(m, "weight", leave_parametrized=bake)
    return model


def on_epoch(model: nn.Module, epoch: int, epochs: int) -> float | None:
    """Call at the start of each epoch (``epoch`` in 0..epochs-1): sets α = schedule(epoch, epochs) and the target
    ramp S*(epoch) for the model's AutoSparse layers. Returns α, or None (no-op) for a model without AutoSparse."""
    params = list(autosparse_layers(model).values())
    if not params:
        return None
    alpha = None
    for ctl in {id(p.controller): p.controller for p in params}.values():
        ctl.alpha = ctl.config.schedule(epoch, epochs)
        ctl.target_now = ctl.config.target_at(epoch, epochs)
        alpha = ctl.alpha
    return alpha


def thresholds(model: nn.Module) -> dict[str, torch.Tensor]:
    """Layer name -> current threshold sigmoid(s) (detached)."""
    return {n: p.threshold() for n, p in autosparse_layers(model).items()}


# -------------------------------------------------------------------------------------- recipe integration

def parse_args(args: str | None) -> AutoSparseConfig:
    """``'0.8:alpha0=0.3:channel'`` -> AutoSparseConfig. The first field may be a target (float or ``none``)."""
    parts = [p for p in (args or "").split(":") if p]
    kw: dict[str, Any] = {}
    sched: dict[str, Any] = {}
    opts = ("alpha0", "schedule", "end", "ramp", "gain", "s0", "channel", "skip-first-last")
    for i, part in enumerate(parts):
        key, eq, val = part.partition("=")
        try:
            if i == 0 and not eq and key not in opts:
                kw["target"] = None if key == "none" else float(key)
            elif key in ("alpha0", "end"):
                sched[key] = float(val)
            elif key == "schedule":
                sched["kind"] = val
            elif key in ("ramp", "gain", "s0"):
                kw[key] = float(val)
            elif key == "channel" and not eq:
                kw["granularity"] = "channel"
            elif key == "skip-first-last" and not eq:
                kw["skip_first_last"] = True
            else:
                raise ValueError(f"unknown option {part!r}")
        except ValueError as e:
            raise ValueError(f"autosparse options {args!r}: {e}; expected [TARGET|none][:key=value...] with keys "
                             f"{', '.join(opts)}") from None
    if sched:
        kw["schedule"] = AlphaSchedule(**sched)
    return AutoSparseConfig(**kw)


def _transform(model: nn.Module, recipe: Recipe | None, args: str | None) -> nn.Module:
    # recipe.exempt / exempt_first_last are about precision, not sparsity: every GEMM layer is pruned unless the
    # transform says skip-first-last (or apply_autosparse is called with AutoSparseConfig.exempt).
    return apply_autosparse(model, parse_args(args))


def _modifier(base: Recipe, arg: str | None) -> Recipe:
    parse_args(arg)  # validate now, not at emulate time
    entry = "autosparse" + (f":{arg}" if arg else "")
    return base.replace(name=f"{base.name}+{entry}", transforms=tuple(base.transforms) + (entry,),
                        notes=(base.notes + " " if base.notes else "")
                        + "AutoSparse (Kundu et al. 2023): learnable thresholds with gradient annealing; build the "
                          "optimizer after emulate and call lowp.techniques.autosparse.on_epoch each epoch.")


def _flops_cell(extras: dict) -> str | None:
    tr, inf = extras.get("train_flops_ratio"), extras.get("inference_flops_ratio")
    return None if tr is None else f"{tr:.2f} / {inf:.2f}"


class AutoSparseTechnique(Technique):
    """The ``autosparse[:...]`` transform with its training hooks: :func:`on_epoch` each epoch; history extras
    ``sparsity`` (overall) and ``layer_sparsity`` (per layer) from ``flops.sparsity_report`` on one training input;
    run extras ``sparsity`` (final), ``train_flops_ratio`` (whole run, ``cumulative_train_flops_ratio``) and
    ``inference_flops_ratio`` (final), all against dense. Not data-parallel yet in ``lowp compare``."""

    name = "autosparse"
    supports_data_parallel = False
    columns = (Column("sparsity", "sparsity %",
                      lambda x: None if x.get("sparsity") is None else f"{100 * x['sparsity']:.1f}"),
               Column("flops", "train/infer FLOPs vs dense", _flops_cell))

    def transform(self, model: nn.Module, recipe: Recipe | None, args: str | None) -> nn.Module:
        return _transform(model, recipe, args)

    def undo(self, model: nn.Module) -> None:
        remove_autosparse(model)

    def on_epoch(self, model: nn.Module, epoch: int, epochs: int) -> None:
        on_epoch(model, epoch, epochs)

    def epoch_metrics(self, model: nn.Module, sample: Any) -> EpochMetrics | dict:
        if not autosparse_layers(model):
            return {}
        was = model.training
        model.eval()
        with torch.no_grad():
            report = sparsity_report(model, sample)
        model.train(was)
        return EpochMetrics({"sparsity": report["sparsity"], "layer_sparsity": report["layer_sparsity"]}, report)

    def run_metrics(self, details) -> dict:
        reports = [d for d in details if d is not None and "dense_train_flops" in d]
        if not reports:
            return {}
        return {"sparsity": reports[-1]["sparsity"], "train_flops_ratio": cumulative_train_flops_ratio(reports),
                "inference_flops_ratio": reports[-1]["inference_flops_ratio"]}

    def report_section(self, runs) -> ReportSection:
        return ReportSection("Sparsity", "<p>Fraction of zero weights per layer at the end of each epoch; the table "
                             "gives the final overall sparsity and the training / inference FLOPs against dense.</p>",
                             (LayerPlot("layer_sparsity", "zero weights (%)", "sparsity.png",
                                        "sparsity per layer over training", scale=100.0),))


def register() -> None:
    """Register the ``autosparse`` recipe modifier and technique (idempotent)."""
    extensions.register_modifier("autosparse", _modifier)
    extensions.register_technique(AutoSparseTechnique())


register()
