"""The training loop of ``lowp compare``: one task under one recipe, seeded, with divergence detection.

Every run with the same :class:`RunSettings` sees the same initial weights (``torch.manual_seed(seed)`` before the
model is built, then the recipe is applied) and the same data order (a ``torch.Generator`` seeded with ``seed``).
A recipe is applied through the training contract of docs/architecture.md (``lowp.emulate`` +
``lowp.LowpOptimizer``, with the base optimiser built after ``emulate``). A NaN/Inf training loss stops the run and marks it diverged.

Numerics extension point: ``train_run(..., numerics_every=N)`` asks ``lowp.analysis`` for a collector
(``lowp.analysis.numerics_collector(model, every=N)``, a context manager with ``.records() -> list[dict]``); its
records (layer, role, step, underflow, overflow, subnormal, sqnr_db, amax)
land in ``RunResult.numerics`` and the report draws them.

One loop: :func:`train_epochs` is the epoch/step loop of ``train_run`` and of the data-parallel worker of
``lowp.experiments.parallel``; what differs between them is plugged in through ``parallel`` (see
:class:`SingleProcess`: the module called forward, this process's samples of a global batch, the global loss).
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import sys
import time
from typing import Any

import torch

from ..formats import compiling
from .data import TaskData, TrainSource, batch_len, eval_batches, first_inputs, head
from .tasks import Task, call_model, get_task, model_logits


@dataclasses.dataclass(frozen=True)
class RunSettings:
    """What makes two runs comparable: task, seed, epochs and optimiser hyper-parameters."""

    task: str
    seed: int = 0
    epochs: int = 10
    lr: float = 0.05
    batch_size: int = 64

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunSettings":
        return cls(**d)


@dataclasses.dataclass(frozen=True)
class EpochRecord:
    """One epoch of history: mean training loss, test metric, cumulative skipped steps, loss scale at the end."""

    epoch: int
    train_loss: float
    test_metric: float
    skipped_steps: int = 0
    loss_scale: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


#: top-level RunResult fields of older results.json files that ``RunResult.from_dict`` moves into ``extras``
LEGACY_EXTRAS = ("sparsity", "train_flops_ratio", "inference_flops_ratio")


@dataclasses.dataclass(frozen=True)
class RunResult:
    """The outcome of one recipe. ``metric`` is the final test metric (also for a diverged run: the metric of the
    model as it was when the run stopped); ``fp32_delta`` = metric − metric of the ``fp32`` run (None without
    one); ``error`` is the one-line message of an exception that ended the run (then ``metric`` is None)."""

    recipe: str
    metric: float | None
    metric_name: str
    diverged: bool
    history: tuple[dict, ...]
    skipped_steps: int
    wall_s: float
    steps: int
    settings: dict
    recipe_spec: dict
    fp32_delta: float | None = None
    diverged_at: dict | None = None
    loss_scale: float | None = None
    error: str | None = None
    numerics: tuple[dict, ...] | None = None
    #: run-level metrics of the recipe's techniques (``Technique.run_metrics``), e.g. AutoSparse's ``sparsity``,
    #: ``train_flops_ratio`` and ``inference_flops_ratio``
    extras: dict = dataclasses.field(default_factory=dict)
    nproc: int = 1
    grad_hook: str = "none"
    bytes_per_step: float | None = None
    compression_ratio: float | None = None
    gemm_emulated: float | None = None  # share of one step's GEMM FLOPs the recipe emulates (lowp.coverage)
    first_use_s: float | None = None  # first-use compilation / warm-up time (see step_timing)
    step_s: float | None = None  # steady-state training step time (median, see step_timing)
    peak_rss_mb: float | None = None  # the process's peak resident set size at the end of the run (ru_maxrss)

    @property
    def seed(self) -> int:
        return int((self.settings or {}).get("seed", 0))

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["history"] = list(self.history)
        d["numerics"] = None if self.numerics is None else list(self.numerics)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunResult":
        """From ``to_dict``'s output; unknown keys are ignored. Results written before techniques reported through
        ``extras`` carry AutoSparse's fields at the top level: they are moved into ``extras``."""
        d = dict(d)
        d["history"] = tuple(d.get("history") or ())
        if d.get("numerics") is not None:
            d["numerics"] = tuple(d["numerics"])
        extras = dict(d.get("extras") or {})
        for k in LEGACY_EXTRAS:
            v = d.pop(k, None)
            if v is not None:
                extras.setdefault(k, v)
        d["extras"] = extras
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    @property
    def status(self) -> str:
        return "error" if self.error else "diverged" if self.diverged else "ok"


# ------------------------------------------------------------------------------------------- recipe adapter

def resolve_recipe(recipe: Any):
    """A Recipe from a name, a dict (``Recipe.to_dict``) or a Recipe."""
    from ..recipes import get_recipe
    from ..recipes.recipe import Recipe

    if isinstance(recipe, dict):
        return Recipe.from_dict(recipe)
    return get_recipe(recipe)


def apply_recipe(model: torch.nn.Module, recipe: Any, make_optimizer):
    """The training contract: ``lowp.emulate(model, recipe)``, then the base optimiser over the emulated model's
    parameters (transforms such as PACT add parameters, e.g. its clipping level alpha), wrapped by
    ``lowp.LowpOptimizer``. Returns (model, lowp optimizer, base optimizer)."""
    from ..recipes import emulate
    from ..recipes.optim import LowpOptimizer

    model = emulate(model, recipe)
    base = make_optimizer(model.parameters())
    return model, LowpOptimizer(base, recipe), base


_RECORD_KEYS = {f.name for f in dataclasses.fields(EpochRecord)}


def _techniques(model: torch.nn.Module) -> list:
    """The techniques ``emulate`` applied to ``model`` (``lowp.recipes.technique``), in the recipe's order."""
    from ..recipes.emulate import applied_techniques

    return applied_techniques(model)


def start_epoch(model: torch.nn.Module, epoch: int, epochs: int) -> None:
    """The techniques' per-epoch hooks (``Technique.on_epoch``, e.g. AutoSparse's gradient-annealing schedule)."""
    for t in _techniques(model):
        t.on_epoch(model, epoch, epochs)


def epoch_report(model: torch.nn.Module, sample: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """What the techniques report at the end of an epoch (``Technique.epoch_metrics`` on one training input, e.g.
    PACT's ``pact_alpha``, AutoSparse's ``sparsity`` / ``layer_sparsity``). Returns (history extras, technique
    name -> its detail for ``run_metrics``)."""
    from ..recipes.technique import EpochMetrics

    extras: dict[str, Any] = {}
    details: dict[str, Any] = {}
    for t in _techniques(model):
        m = t.epoch_metrics(model, sample)
        hist, detail = (m.history, m.detail) if isinstance(m, EpochMetrics) else (m, None)
        clash = set(hist) & (set(extras) | _RECORD_KEYS)
        if clash:
            raise ValueError(f"technique {t.name!r}: epoch metric(s) {sorted(clash)} clash with the history's own "
                             "keys or another technique's")
        extras.update(hist)
        details[t.name] = dict(hist) if detail is None else detail
    return extras, details


def run_extras(model: torch.nn.Module, state: "LoopState") -> dict[str, Any]:
    """``RunResult.extras``: every technique's ``run_metrics`` over its per-epoch details."""
    out: dict[str, Any] = {}
    for t in _techniques(model):
        out.update(t.run_metrics(tuple(state.technique_details.get(t.name, ()))))
    return out


def _numerics_collector(model: torch.nn.Module, every: int):
    """The analysis layer's numerics collector (see module docstring)."""
    from ..analysis import numerics_collector

    return numerics_collector(model, every=every)


# ------------------------------------------------------------------------------------------------ the loop

def _lr_at(task: Task, base_lr: float, step: int, total: int) -> float:
    """Linear warm-up over the task's first ``warmup_steps`` steps (``base_lr · (step + 1) / warmup``), then
    constant or cosine from ``base_lr`` to 0 at ``total``."""
    if step < task.warmup_steps:
        return base_lr * (step + 1) / task.warmup_steps
    if task.schedule == "constant" or total <= 1:
        return base_lr
    return 0.5 * base_lr * (1.0 + math.cos(math.pi * step / total))


@torch.no_grad()
def evaluate(model: torch.nn.Module, task: Task, x: Any, y: torch.Tensor | None = None,
             batch: int | None = None) -> float:
    """The task metric on the test data, in eval mode: ``x`` is the task's data (TaskData or StreamData), or test
    inputs with their targets ``y``. Σ total / Σ count of ``task.metric_counts(logits, y)`` over batches of
    ``batch`` (default the task's ``eval_batch_size``); the model is called without labels."""
    batch = task.eval_batch_size if batch is None else batch
    batches = eval_batches(x if y is None else TaskData(x[:0], y[:0], x, y), batch)
    was = model.training
    model.eval()
    correct = total = 0
    for xb, yb in batches:
        c, n = task.metric_counts(model_logits(call_model(model, xb)), yb)
        correct, total = correct + c, total + n
    model.train(was)
    return correct / max(total, 1)


def _show_progress(progress: bool | None) -> bool:
    if progress is None:
        return sys.stderr.isatty()
    return progress


class SingleProcess:
    """The data-parallel plug of :func:`train_epochs` for one process (its default): the module called forward is
    the model, a batch is all of this process's, the local loss is the loss. A data-parallel worker passes an object
    with the same three members (``lowp.experiments.parallel``: a DDP wrapper, its rank's shard, an all-reduced mean).

    - ``forward``: the module the training step calls (None: the model itself); evaluation, the techniques' epoch
      reports and the numerics collector always use the model;
    - ``local_batch(idx)``: this process's samples of a global batch of indices, or None to skip the batch (every
      process must skip it alike: the learning-rate schedule still advances over it, ``steps`` does not);
    - ``global_loss(loss, n)``: the training loss of the whole global batch as a float, from this process's loss
      tensor over its ``n`` samples; all processes must return the same value (a non-finite one stops the run)."""

    forward: torch.nn.Module | None = None

    def local_batch(self, idx: torch.Tensor) -> torch.Tensor | None:
        return idx

    def global_loss(self, loss: torch.Tensor, n: int) -> float:
        return float(loss.detach())


@dataclasses.dataclass
class LoopState:
    """What :func:`train_epochs` has done so far; filled in place, so a caller that catches an exception still sees
    the epochs and steps run before it. ``numerics`` is set only when the loop ends without an exception."""

    history: list[dict] = dataclasses.field(default_factory=list)
    steps: int = 0
    diverged_at: dict | None = None
    technique_details: dict[str, list] = dataclasses.field(default_factory=dict)
    numerics: tuple[dict, ...] | None = None
    step_times: list[float] = dataclasses.field(default_factory=list)
    step_compile_s: list[float] = dataclasses.field(default_factory=list)  # kernel first calls within each step


def train_epochs(task: Task, data: Any, settings: RunSettings, model: torch.nn.Module, opt: Any, base: Any, *,
                 parallel: Any = None, numerics_every: int | None = None, on_step=None,
                 state: LoopState | None = None) -> LoopState:
    """THE epoch/step loop (``train_run`` and the data-parallel worker of ``lowp.experiments.parallel`` both run it):
    per epoch the techniques' ``start_epoch`` hook, a permutation of the training set from a generator seeded with
    ``settings.seed``, cosine/constant learning rate per global step, a step per global batch of
    ``settings.batch_size`` (through ``parallel``, default :class:`SingleProcess`), the test metric, a history
    record with the techniques' ``epoch_report``; a non-finite loss stops the run (``state.diverged_at``).
    ``opt`` is the ``LowpOptimizer`` over ``base``; ``on_step(steps, loss)`` is called after each step (progress);
    ``numerics_every`` wraps the loop in the analysis layer's collector. Exceptions propagate."""
    parallel = SingleProcess() if parallel is None else parallel
    forward = model if parallel.forward is None else parallel.forward
    state = LoopState() if state is None else state
    source = TrainSource(data, task.name)
    if not source.indexed and not isinstance(parallel, SingleProcess):
        raise ValueError(f"task {task.name!r}: data-parallel training needs tensors or a map-style Dataset, "
                         "not a stream")
    total = source.steps_per_epoch(settings.batch_size, task.steps_per_epoch) * settings.epochs
    gen = torch.Generator().manual_seed(settings.seed)
    collector = _numerics_collector(model, numerics_every) if numerics_every else None
    with collector if collector is not None else contextlib.nullcontext():
        forward.train()
        for epoch in range(settings.epochs):
            start_epoch(model, epoch, settings.epochs)
            loss_sum, loss_n = 0.0, 0
            sample = source.sample()
            for item in source.epoch(settings.batch_size, gen, task.steps_per_epoch):
                lr = _lr_at(task, settings.lr, state.steps, total)
                for g in base.param_groups:
                    g["lr"] = lr
                if source.indexed:
                    mine = parallel.local_batch(item)
                    if mine is None:
                        continue
                    (x, y), n = source.fetch(mine), len(mine)
                else:
                    x, y = item
                    n = batch_len(y)
                    if sample is None:
                        sample = head(x)
                t_step, c_step = time.perf_counter(), compiling.first_call_seconds()
                opt.zero_grad()
                loss = task.forward(forward, x, y)[1]
                lv = parallel.global_loss(loss, n)
                if not math.isfinite(lv):
                    state.diverged_at = {"epoch": epoch, "step": state.steps, "loss": str(lv)}
                    break
                opt.backward(loss)
                opt.step()
                state.step_times.append(time.perf_counter() - t_step)
                state.step_compile_s.append(compiling.first_call_seconds() - c_step)
                state.steps += 1
                loss_sum, loss_n = loss_sum + lv, loss_n + 1
                if on_step is not None:
                    on_step(state.steps, lv)
            metric = evaluate(model, task, data)
            rec = EpochRecord(epoch + 1, loss_sum / loss_n if loss_n else float("nan"), metric,
                              int(opt.skipped_steps), _scale(opt)).to_dict()
            extras, details = epoch_report(model, sample) if sample is not None else ({}, {})
            rec.update(extras)
            for name, detail in details.items():
                state.technique_details.setdefault(name, []).append(detail)
            state.history.append(rec)
            if state.diverged_at is not None:
                break
        if collector is not None:
            state.numerics = tuple(_json_safe(dict(r)) for r in collector.records())
    return state


def prepare_run(task: Task | str, recipe: Any, settings: RunSettings):
    """The start every run of ``settings`` shares: the task, the Recipe, the data and the model built right after
    ``torch.manual_seed(settings.seed)`` (before the recipe is applied). Returns (task, recipe, data, model)."""
    task = get_task(task) if isinstance(task, str) else task
    recipe = resolve_recipe(recipe)
    data = task.load_data()
    torch.manual_seed(settings.seed)
    return task, recipe, data, task.build_model()


def train_run(task: Task | str, recipe: Any, settings: RunSettings, *, progress: bool | None = None,
              numerics_every: int | None = None) -> RunResult:
    """Train ``task`` under ``recipe`` with ``settings``; never raises for a numerical failure (diverged) or an
    exception inside training (``error``), so that a comparison keeps going with the other recipes."""
    from tqdm.auto import tqdm

    task, recipe, data, model = prepare_run(task, recipe, settings)

    def make_optimizer(params):
        return task.make_optimizer(params, settings.lr)

    error = None
    try:
        per_epoch = TrainSource(data, task.name).steps_per_epoch(settings.batch_size, task.steps_per_epoch)
        total = per_epoch * settings.epochs
    except (TypeError, ValueError):  # bad data: train_epochs raises it again, reported as this run's error
        total = None
    t0 = time.perf_counter()
    opt = None
    state = LoopState()
    bar = tqdm(total=total, desc=f"{task.name} {recipe.name}", leave=False, disable=not _show_progress(progress),
               dynamic_ncols=True)

    def on_step(steps: int, lv: float) -> None:
        bar.update(1)
        if steps % 10 == 0:
            bar.set_postfix(loss=f"{lv:.3f}", refresh=False)

    gemm = gemm_share(model, recipe, data, settings.batch_size)
    try:
        model, opt, base = apply_recipe(model, recipe, make_optimizer)
        train_epochs(task, data, settings, model, opt, base, numerics_every=numerics_every, on_step=on_step,
                     state=state)
    except Exception as e:  # noqa: BLE001 - reported per recipe, the comparison goes on
        error = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}".rstrip(": ")
    finally:
        bar.close()
    wall = time.perf_counter() - t0
    history = state.history
    metric = history[-1]["test_metric"] if history and error is None else None
    return RunResult(
        recipe=recipe.name, metric=metric, metric_name=task.metric_name, diverged=state.diverged_at is not None,
        history=tuple(_json_safe(h) for h in history), skipped_steps=int(getattr(opt, "skipped_steps", 0) or 0),
        wall_s=round(wall, 3), steps=state.steps, settings=settings.to_dict(),
        recipe_spec=json.loads(json.dumps(recipe.to_dict())), diverged_at=state.diverged_at, loss_scale=_scale(opt),
        error=error, numerics=state.numerics, gemm_emulated=gemm,
        **step_timing(state.step_times, state.step_compile_s),
        peak_rss_mb=peak_rss_mb(), extras=_json_safe(run_extras(model, state)))


WARM_STEPS = 3  # steps that may pay first-use costs (kernel compilation, allocator and cache warm-up)


def step_timing(times: list[float], compile_s: list[float] | None = None) -> dict[str, float | None]:
    """Split training-step times (zero_grad, forward, backward, optimizer step; evaluation excluded) into the
    steady-state step time ``step_s``, the median of the steps after the first ``WARM_STEPS`` (of all steps when
    there are no more), and the first-use time ``first_use_s`` = (time of the first ``WARM_STEPS`` steps) −
    ``WARM_STEPS`` · ``step_s``, at least 0 (what compilation and warm-up added on top of steady steps), plus the
    kernel compilation (``compile_s``: per step, the time in first calls of compiled kernels) of later steps."""
    import statistics

    if not times:
        return {"first_use_s": None, "step_s": None}
    k = min(WARM_STEPS, len(times))
    steady = statistics.median(times[k:] if len(times) > k else times)
    later = sum((compile_s or [])[k:])
    return {"first_use_s": round(max(0.0, sum(times[:k]) - k * steady) + later, 4), "step_s": round(steady, 6)}


def peak_rss_mb() -> float | None:
    """This process's peak resident set size so far in MiB (``resource.getrusage(RUSAGE_SELF).ru_maxrss``,
    kilobytes on Linux, bytes on macOS); None where unavailable. It never decreases: with several runs in one
    process it is the peak over all of them so far."""
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows
        return None
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(rss / (2**20 if sys.platform == "darwin" else 2**10), 1)


def gemm_share(model: torch.nn.Module, recipe: Any, data: Any, batch_size: int) -> float | None:
    """The share of one training step's GEMM FLOPs that ``recipe`` emulates on ``model`` (``lowp.coverage`` on a
    copy, on the first training inputs, with the RNG state kept: the run itself is unaffected); None if it cannot
    be measured. It runs the eager kernels (``compiling.eager_only``, the same bits): compilation then happens in the
    first training steps, where ``first_use_s`` counts it."""
    import copy

    from ..recipes import coverage

    from collections.abc import Mapping

    try:
        # 8 samples of in-memory data; a stream's first batch (a stream yields whole batches)
        example = first_inputs(data, 8 if isinstance(data, TaskData) else batch_size)
        args, kwargs = ((), dict(example)) if isinstance(example, Mapping) else ((example,), {})
        with compiling.eager_only():
            return round(coverage(copy.deepcopy(model), *args, recipe=recipe, **kwargs).emulated_fraction, 6)
    except Exception:  # noqa: BLE001 - a diagnostic; the run goes on without it
        return None


def _scale(opt: Any) -> float | None:
    s = getattr(opt, "loss_scale", None)
    if s is None:
        return None
    s = float(s)
    return s if math.isfinite(s) else None


def _json_safe(h: dict) -> dict:
    """NaN/Inf floats become None (strict JSON)."""
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in h.items()}
