"""``lowp.compare``: train one task under several recipes and write results, report and plots into a folder.

Output folder layout (``out``, default ``./lowp-compare``)::

    config.toml          the effective configuration (``lowp compare --config DIR/config.toml`` repeats the run)
    config.orig.toml     the config file given with ``--config``, copied verbatim
    runs/<recipe>.json   one finished run each, written as soon as it finishes (resume reads them)
    results.json         every recipe: recipe, metric, metric_name, fp32_delta, diverged, history, skipped_steps,
                         wall_s, ...; plus task, seed, epochs, lr, batch_size
    report.html, *.png   the report (see report.py)

All files are written atomically. Every input (task, recipes, numbers, folder) is checked before anything is
written, each recipe by a dry run (emulate, forward and backward on 2 training samples). The folder is locked
(``.lowp.lock``, an OS lock the kernel releases when its holder dies) while a comparison writes into it: a second
comparison into it is refused. ``jobs`` workers die with the process that started them. A rerun into the same
folder reuses each ``runs/<recipe>.json`` whose settings (task, seed, epochs, lr, batch size and the full recipe) are
identical, and trains the rest (runs that ended in an exception are retried). ``fp32_delta`` is
``metric − metric(fp32)`` in the metric's own units (a fraction for accuracy; the table shows percentage points),
whatever the metric's direction: for a lower-is-better metric (``higher_is_better`` false in results.json, e.g. a
validation loss) a positive delta is a loss of quality. It is None when the comparison has no ``fp32`` recipe, the
fp32 run failed or diverged, or the run itself failed or diverged.
"""
from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import json
import multiprocessing as mp
import os
import pickle
import shutil
import sys
import tempfile
from typing import Any, Sequence

from . import io
from .config import CompareConfig, RecipeEntry, load_config
from .tasks import get_task, is_task_path, register_task, task_factory
from .train import RunResult, RunSettings, train_run

REFERENCE = "fp32"


@dataclasses.dataclass(frozen=True)
class Comparison:
    """The results of one comparison (what ``results.json`` holds)."""

    task: str
    seed: int
    epochs: int
    lr: float
    batch_size: int
    metric_name: str
    runs: tuple[RunResult, ...]
    out: str | None = None
    reused: tuple[str, ...] = ()
    higher_is_better: bool = True
    metric_unit: str = "fraction"

    def to_dict(self) -> dict[str, Any]:
        from .. import __version__

        return {"task": self.task, "seed": self.seed, "epochs": self.epochs, "lr": self.lr,
                "batch_size": self.batch_size, "metric_name": self.metric_name,
                "higher_is_better": self.higher_is_better, "metric_unit": self.metric_unit, "reference": REFERENCE,
                "lowp_version": __version__, "reused": list(self.reused),
                "results": [r.to_dict() for r in self.runs]}

    @classmethod
    def from_dict(cls, d: dict[str, Any], out: str | None = None) -> "Comparison":
        return cls(d["task"], d["seed"], d["epochs"], d["lr"], d["batch_size"], d["metric_name"],
                   tuple(RunResult.from_dict(r) for r in d["results"]), out, tuple(d.get("reused", ())),
                   bool(d.get("higher_is_better", True)), str(d.get("metric_unit", "fraction")))

    def run(self, recipe: str) -> RunResult:
        for r in self.runs:
            if r.recipe == recipe:
                return r
        raise KeyError(recipe)


def load_results(path: str) -> Comparison:
    """Read a ``results.json`` (or the folder holding it)."""
    if os.path.isdir(path):
        path = os.path.join(path, "results.json")
    with open(path, encoding="utf-8") as f:
        return Comparison.from_dict(json.load(f), os.path.dirname(path))


def _with_deltas(runs: Sequence[RunResult]) -> tuple[RunResult, ...]:
    """fp32_delta for each run; None when there is no finished, non-diverged fp32 run, or the run itself diverged
    or failed (a diverged run's metric comes from a model with non-finite weights: no comparison to draw)."""
    ref = next((r for r in runs if r.recipe == REFERENCE and r.metric is not None and not r.diverged), None)
    out = []
    for r in runs:
        delta = (None if ref is None or r.metric is None or r.diverged
                 else round(r.metric - ref.metric, 10))
        out.append(dataclasses.replace(r, fp32_delta=delta))
    return tuple(out)


def _prepare_out(out: str) -> None:
    """Create ``out`` and prove it writable, with a one-line error otherwise (runs/ is made under the lock)."""
    if os.path.exists(out) and not os.path.isdir(out):
        raise ValueError(f"output path {out!r} exists and is not a directory")
    try:
        os.makedirs(out, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".probe-", dir=out)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise ValueError(f"cannot write to output directory {out!r}: {e.strerror or e}") from None


def _run_path(out: str, name: str) -> str:
    return os.path.join(out, "runs", io.safe_filename(name) + ".json")


def _finished(out: str, name: str, key: dict) -> RunResult | None:
    """The saved run of ``name`` if its settings and recipe equal ``key``."""
    p = _run_path(out, name)
    try:
        with open(p, encoding="utf-8") as f:
            d = json.load(f)
        if d.get("key") != key:
            return None
        res = RunResult.from_dict(d["result"])
        return None if res.error else res  # a run that failed with an exception is retried
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _run_key(settings: RunSettings, recipe_spec: dict, numerics_every: int | None) -> dict:
    # through JSON so that a key read back from disk compares equal (tuples become lists)
    return json.loads(json.dumps({"settings": settings.to_dict(), "recipe": recipe_spec,
                                  "numerics_every": numerics_every}))


def _save_run(out: str, res: RunResult, key: dict) -> None:
    io.atomic_write_json(_run_path(out, res.recipe), {"key": key, "result": res.to_dict()})


def _worker_init(threads: int, tasks: dict[str, bytes], parent: int | None = None) -> None:
    import torch

    if parent is not None:
        from .lifetime import die_with_parent

        die_with_parent(parent)

    torch.set_num_threads(threads)
    for name, blob in tasks.items():
        register_task(name, pickle.loads(blob), replace=True)


def _worker(task: str, recipe_dict: dict, settings: RunSettings, out: str, key: dict,
            numerics_every: int | None) -> dict:
    from ..recipes.recipe import Recipe

    res = train_run(task, Recipe.from_dict(recipe_dict), settings, progress=False, numerics_every=numerics_every)
    _save_run(out, res, key)
    return res.to_dict()


def _log(quiet: bool, msg: str) -> None:
    if not quiet:
        print(msg, file=sys.stderr, flush=True)


def compare(task: str | None = None, recipes: Sequence[Any] | str | None = None, *, epochs: int | None = None,
            seed: int | None = None, out: str | None = None, jobs: int | None = None,
            config: "str | os.PathLike | CompareConfig | None" = None, lr: float | None = None,
            batch_size: int | None = None, numerics_every: int | None = None, nproc: int | None = None,
            grad_hook: str | None = None, quiet: bool = False,
            progress: bool | None = None, report: bool = True) -> Comparison:
    """Train ``task`` under each of ``recipes`` and write results, plots and report into ``out``.

    ``recipes``: names, ``RecipeEntry``/dicts (name, base, overrides), or a comma-separated string. Arguments
    given here override ``config`` (a TOML path or a CompareConfig), which overrides the defaults (task
    mnist1d-cnn; recipes fp32, bf16, fp8-hybrid, fp8-e5m2, fp8-e5m2-noscale, fp8-ibm; seed 0; out lowp-compare;
    the task's epochs, lr and batch size). ``jobs`` > 1 trains recipes in that many spawned processes, each with
    ``max(1, cores // jobs)`` torch threads. ``nproc`` > 1 trains each recipe data-parallel on that many processes
    (torch.distributed, gloo) with the gradient communication hook ``grad_hook`` (``none``, ``adacomp``,
    ``allreduce:FORMAT[:stochastic][:ef]``; see lowp.distributed); results then carry bytes_per_step and
    compression_ratio. Returns the :class:`Comparison` (also written to results.json).
    """
    # ---- validate everything before writing anything
    orig_config = None
    if config is None:
        cfg = CompareConfig()
    elif isinstance(config, CompareConfig):
        cfg = config
    else:
        orig_config = os.fspath(config)
        cfg = load_config(orig_config)
    if isinstance(recipes, str):
        recipes = [r for r in (x.strip() for x in recipes.split(",")) if r]
    cfg = cfg.replace(task=task, recipes=None if recipes is None else [RecipeEntry.from_any(r).to_dict()
                                                                       for r in recipes],
                      epochs=epochs, seed=seed, out=None if out is None else os.fspath(out), jobs=jobs, lr=lr,
                      batch_size=batch_size, numerics_every=numerics_every, nproc=nproc, grad_hook=grad_hook)
    the_task = get_task(cfg.task)
    resolved = [(e.name, _resolve(e)) for e in cfg.recipes]
    settings = RunSettings(cfg.task, cfg.seed, cfg.epochs or the_task.epochs, float(cfg.lr or the_task.lr),
                           cfg.batch_size or the_task.batch_size)
    _check_runs(the_task, resolved, settings, cfg)
    task_blobs: dict[str, bytes] = {}
    if cfg.jobs > 1 and not is_task_path(cfg.task):  # a task path is imported again by each worker
        try:
            task_blobs[cfg.task] = pickle.dumps(task_factory(cfg.task))
        except Exception as e:  # noqa: BLE001
            raise ValueError(f"task {cfg.task!r} cannot be sent to worker processes ({type(e).__name__}); "
                             "register a module-level factory or use jobs=1") from None
    outdir = cfg.out
    _prepare_out(outdir)
    with io.locked_dir(outdir, "lowp compare"):
        return _compare_locked(cfg, the_task, resolved, settings, task_blobs, orig_config, quiet, progress, report)


def _resolve(entry: RecipeEntry):
    """The entry's Recipe; a bad base, override or value is a one-line ValueError naming the recipe."""
    try:
        return entry.resolve()
    except (ValueError, TypeError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ValueError(msg if entry.name in msg else f"recipe {entry.name!r}: {msg}") from None


def _check_runs(the_task, resolved, settings: RunSettings, cfg: CompareConfig) -> None:
    """The part of the validation pass that needs the task: the batch size against the training set, and a dry run
    of every recipe (emulate, optimiser, forward and backward on 2 training samples), so that a bad override or
    transform is a one-line error before anything is written instead of a failed run after training."""
    import torch

    from .train import apply_recipe

    from .data import TrainSource

    src = TrainSource(the_task.load_data(), cfg.task)
    n = src.n  # None for a stream
    if n is not None and settings.batch_size > n:
        raise ValueError(f"batch_size {settings.batch_size} exceeds the training set of task {cfg.task!r} "
                         f"({n} samples)")
    k = 2 if n is None else min(2, n)
    xb, yb = (src.fetch(torch.arange(k)) if src.indexed else
              next(iter(src.epoch(k, torch.Generator().manual_seed(0), 1))))
    if cfg.nproc > settings.batch_size:
        raise ValueError(f"batch_size {settings.batch_size} is smaller than nproc {cfg.nproc}: every process needs "
                         "at least one sample of each batch")
    for name, recipe in resolved:
        if cfg.nproc > 1 and any(t.split(":")[0] == "autosparse" for t in recipe.transforms):
            raise ValueError(f"recipe {name!r}: AutoSparse recipes cannot run data-parallel yet (nproc 1 only)")
        with torch.random.fork_rng(devices=[]):
            try:
                model = the_task.build_model()
                _check_exempt(name, recipe, model, cfg.task)
                model, opt, _ = apply_recipe(model, recipe, lambda p: the_task.make_optimizer(p, settings.lr))
                model.train()
                _, loss = the_task.forward(model, xb, yb)
                opt.backward(loss)
            except _Refused:
                raise
            except Exception as e:  # noqa: BLE001 - any failure here is the recipe's: one line naming it
                msg = str(e).splitlines()[0] if str(e) else ""
                raise ValueError(f"recipe {name!r} fails a dry run on {cfg.task!r}: {type(e).__name__}: {msg}"
                                 .rstrip(": ")) from None


class _Refused(ValueError):
    pass


def _check_exempt(name: str, recipe, model, task: str) -> None:
    """Every ``exempt`` pattern matches some layer of the task's model (a typo would silently exempt nothing)."""
    import fnmatch

    layers = [n for n, _ in model.named_modules() if n]
    for pat in recipe.exempt:
        if not any(fnmatch.fnmatchcase(n, pat) for n in layers):
            raise _Refused(f"recipe {name!r}: exempt pattern {pat!r} matches no layer of task {task!r} "
                           f"(layers: {', '.join(layers[:12])}{', ...' if len(layers) > 12 else ''})")


def _compare_locked(cfg: CompareConfig, the_task, resolved, settings: RunSettings, task_blobs: dict[str, bytes],
                    orig_config: str | None, quiet: bool, progress: bool | None, report: bool) -> Comparison:
    """The writing part of :func:`compare`, run while this process holds the lock on ``cfg.out``."""
    if report:  # import the plotting backend now: a Ctrl-C landing inside its C-extension import aborts Python
        import matplotlib.backends.backend_agg  # noqa: F401
    outdir = cfg.out
    os.makedirs(os.path.join(outdir, "runs"), exist_ok=True)
    # ---- write the effective config; stale results/report are removed until this run writes new ones
    io.atomic_write_text(os.path.join(outdir, "config.toml"), cfg.to_toml())
    if orig_config is not None and os.path.abspath(orig_config) != os.path.abspath(
            os.path.join(outdir, "config.toml")):
        shutil.copyfile(orig_config, os.path.join(outdir, "config.orig.toml"))
    for stale in ("results.json", "report.html"):
        p = os.path.join(outdir, stale)
        if os.path.exists(p):
            os.unlink(p)

    # ---- resume
    results: dict[str, RunResult] = {}
    pending = []
    for name, recipe in resolved:
        spec = recipe.to_dict()
        key = _run_key(settings, spec, cfg.numerics_every)
        if cfg.nproc > 1:
            key = {**key, "nproc": cfg.nproc, "grad_hook": cfg.grad_hook}
        done = _finished(outdir, name, key)
        if done is not None:
            results[name] = done
            _log(quiet, f"lowp compare: {name}: reusing finished run {_run_path(outdir, name)}")
        else:
            pending.append((name, recipe, key))
    reused = tuple(results)

    # ---- train
    if pending:
        _log(quiet, f"lowp compare: {cfg.task} ({the_task.metric_name}), {settings.epochs} epochs, seed "
                    f"{settings.seed}: training {', '.join(n for n, _, _ in pending)}"
                    + (f" on {cfg.jobs} processes" if cfg.jobs > 1 else ""))
    show = (not quiet) if progress is None else progress
    show = show and sys.stderr.isatty() if progress is None else show
    if cfg.jobs == 1 or len(pending) <= 1 or cfg.nproc > 1:
        for name, recipe, key in pending:
            if cfg.nproc > 1:
                res = _data_parallel_run(cfg, recipe, settings)
            else:
                res = train_run(the_task, recipe, settings, progress=show, numerics_every=cfg.numerics_every)
            _save_run(outdir, res, key)
            results[name] = res
            _log(quiet, f"lowp compare: {name}: {_one_line(res, the_task.metric_unit)}")
    else:
        from tqdm.auto import tqdm

        threads = max(1, (os.cpu_count() or 1) // cfg.jobs)
        with cf.ProcessPoolExecutor(max_workers=min(cfg.jobs, len(pending)), mp_context=mp.get_context("spawn"),
                                    initializer=_worker_init, initargs=(threads, task_blobs, os.getpid())) as ex:
            futs = {ex.submit(_worker, cfg.task, recipe.to_dict(), settings, outdir, key, cfg.numerics_every): name
                    for name, recipe, key in pending}
            with tqdm(total=len(futs), desc="recipes", disable=not show, leave=False) as bar:
                for fut in cf.as_completed(futs):
                    res = RunResult.from_dict(fut.result())
                    results[futs[fut]] = res
                    bar.update(1)
                    _log(quiet, f"lowp compare: {futs[fut]}: {_one_line(res, the_task.metric_unit)}")

    runs = _with_deltas([results[name] for name, _ in resolved])
    comp = Comparison(cfg.task, settings.seed, settings.epochs, settings.lr, settings.batch_size,
                      the_task.metric_name, runs, outdir, reused, the_task.higher_is_better, the_task.metric_unit)
    io.atomic_write_json(os.path.join(outdir, "results.json"), comp.to_dict())
    if report:
        from .report import render

        render(comp, outdir)
    return comp


def _data_parallel_run(cfg: CompareConfig, recipe, settings: RunSettings) -> RunResult:
    """One recipe trained data-parallel (``parallel.run_data_parallel``); a failure is reported as this run's error."""
    import dataclasses as dc

    from .parallel import run_data_parallel

    try:
        d = run_data_parallel(cfg.task, recipe, settings, nproc=cfg.nproc, hook=cfg.grad_hook,
                              numerics_every=cfg.numerics_every)
    except Exception as e:  # noqa: BLE001 - reported per recipe, the comparison goes on
        return RunResult(recipe=recipe.name, metric=None, metric_name=get_task(cfg.task).metric_name,
                         diverged=False, history=(), skipped_steps=0, wall_s=0.0, steps=0,
                         settings=settings.to_dict(), recipe_spec=recipe.to_dict(), nproc=cfg.nproc,
                         grad_hook=cfg.grad_hook, error=f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
    res = RunResult.from_dict(d)
    return dc.replace(res, nproc=cfg.nproc, grad_hook=cfg.grad_hook, bytes_per_step=d.get("bytes_per_step"),
                      compression_ratio=d.get("compression_ratio"))


def _one_line(r: RunResult, unit: str = "fraction") -> str:
    from .report import metric_text

    if r.error:
        return f"error ({r.error}) after {r.wall_s:.1f}s"
    m = "-" if r.metric is None else f"{r.metric_name} {metric_text(r.metric, unit)}"
    return f"{'DIVERGED, ' if r.diverged else ''}{m}, {r.skipped_steps} skipped steps, {r.wall_s:.1f}s"
