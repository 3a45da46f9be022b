"""``lowp.compare``: train one task under several recipes and write results, report and plots into a folder.

Output folder layout (``out``, default ``./lowp-compare``)::

    config.toml          the effective configuration (``lowp compare --config DIR/config.toml`` repeats the run)
    config.orig.toml     the config file given with ``--config``, copied verbatim
    runs/<recipe>@<seed>.json  one finished run each (recipe × seed), written as soon as it finishes (resume
                         reads them), with the build that made it (``made_by``: ``provenance.py``)
    results.json         ``results``: every run (recipe × seed): recipe, metric, metric_name, fp32_delta, diverged,
                         history, skipped_steps, wall_s, first_use_s, step_s, peak_rss_mb, settings (with its
                         seed), ...; ``aggregate``: per recipe over seeds (aggregate.py: mean, sd, paired Δ with its
                         95% CI); plus task, seeds, epochs, lr, batch_size, model (GEMM shapes for the estimate)
    report.html, *.png   the report (see report.py)

All files are written atomically. Every input (task, recipes, numbers, folder) is checked before anything is
written, each recipe by a dry run (emulate, forward and backward on 2 training samples). The folder is locked
(``.lowp.lock``, an OS lock the kernel releases when its holder dies) while a comparison writes into it: a second
comparison into it is refused. ``jobs`` workers die with the process that started them. A rerun into the same
folder reuses each ``runs/<recipe>@<seed>.json`` whose settings (task, seed, epochs, lr, batch size, numerics
interval and the full recipe) are identical, and trains the rest (runs that ended in an exception are retried).
A reused run made by another build (another lowp or torch version, edited lowp sources, or a lowp that did not
record its build) is reused with a warning and listed as ``reused_other_build`` in results.json and in the report;
``rerun_stale`` trains such runs again instead.
``fp32_delta`` is ``metric − metric(fp32)`` of the same seed, in the metric's own units (a fraction for accuracy;
the table shows percentage points), whatever the metric's direction: for a lower-is-better metric
(``higher_is_better`` false in results.json, e.g. a validation loss) a positive delta is a loss of quality. It is
None when the comparison has no ``fp32`` run of that seed, the fp32 run failed or diverged, or the run itself failed
or diverged.
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

from . import io, provenance
from .aggregate import RecipeSummary, recipe_names, summarize
from .config import CompareConfig, RecipeEntry, load_config
from .tasks import get_task, is_task_path, register_task, task_factory
from .train import RunResult, RunSettings, train_run

REFERENCE = "fp32"


@dataclasses.dataclass(frozen=True)
class Comparison:
    """The results of one comparison (what ``results.json`` holds): every run (recipe × seed, in recipe order, seeds
    in order within a recipe), the seeds, and the model's GEMM shapes and parameter count (``model``, for the
    hardware estimate; None when they could not be measured)."""

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
    seeds: tuple[int, ...] | None = None
    model: dict | None = None
    reused_other_build: tuple[str, ...] = ()  # reused runs made by another build (``provenance.py``)

    def __post_init__(self) -> None:
        if self.seeds is None:
            found = tuple(dict.fromkeys(r.seed for r in self.runs)) or (self.seed,)
            object.__setattr__(self, "seeds", found)
        object.__setattr__(self, "seeds", tuple(self.seeds))

    @property
    def recipes(self) -> list[str]:
        """Recipe names in table order."""
        return recipe_names(self.runs)

    def summaries(self) -> list[RecipeSummary]:
        """One summary per recipe over its seeds (``aggregate.summarize``)."""
        return summarize(self.runs)

    def to_dict(self) -> dict[str, Any]:
        from .. import __version__

        return {"task": self.task, "seed": self.seed, "seeds": list(self.seeds), "epochs": self.epochs,
                "lr": self.lr, "batch_size": self.batch_size, "metric_name": self.metric_name,
                "higher_is_better": self.higher_is_better, "metric_unit": self.metric_unit, "reference": REFERENCE,
                "lowp_version": __version__, "reused": list(self.reused),
                "reused_other_build": list(self.reused_other_build), "model": self.model,
                "aggregate": [s.to_dict() for s in self.summaries()],
                "results": [r.to_dict() for r in self.runs]}

    @classmethod
    def from_dict(cls, d: dict[str, Any], out: str | None = None) -> "Comparison":
        return cls(d["task"], d["seed"], d["epochs"], d["lr"], d["batch_size"], d["metric_name"],
                   tuple(RunResult.from_dict(r) for r in d["results"]), out, tuple(d.get("reused", ())),
                   bool(d.get("higher_is_better", True)), str(d.get("metric_unit", "fraction")),
                   tuple(d["seeds"]) if d.get("seeds") else None, d.get("model"),
                   tuple(d.get("reused_other_build", ())))

    def run(self, recipe: str, seed: int | None = None) -> RunResult:
        """The run of ``recipe`` under ``seed`` (default: its first run)."""
        for r in self.runs:
            if r.recipe == recipe and (seed is None or r.seed == seed):
                return r
        raise KeyError(recipe if seed is None else (recipe, seed))

    def runs_of(self, recipe: str) -> list[RunResult]:
        return [r for r in self.runs if r.recipe == recipe]


def load_results(path: str) -> Comparison:
    """Read a ``results.json`` (or the folder holding it)."""
    if os.path.isdir(path):
        path = os.path.join(path, "results.json")
    with open(path, encoding="utf-8") as f:
        return Comparison.from_dict(json.load(f), os.path.dirname(path))


def _with_deltas(runs: Sequence[RunResult]) -> tuple[RunResult, ...]:
    """fp32_delta for each run against the fp32 run of the same seed; None when there is no finished,
    non-diverged fp32 run of that seed, or the run itself diverged or failed (a diverged run's metric comes from a
    model with non-finite weights: no comparison to draw)."""
    refs = {r.seed: r for r in runs if r.recipe == REFERENCE and r.metric is not None and not r.diverged}
    out = []
    for r in runs:
        ref = refs.get(r.seed)
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


def _run_path(out: str, name: str, seed: int) -> str:
    # '@' never occurs in a safe_filename stem: recipe and seed part unambiguously
    return os.path.join(out, "runs", f"{io.safe_filename(name)}@{seed}.json")


def _finished(out: str, name: str, seed: int, key: dict) -> tuple[RunResult, Any] | None:
    """The saved run of ``name`` under ``seed`` if its settings and recipe equal ``key``, with the build that made
    it (its ``made_by``; None for a run that recorded none)."""
    p = _run_path(out, name, seed)
    try:
        with open(p, encoding="utf-8") as f:
            d = json.load(f)
        if d.get("key") != key and _current_key(d.get("key")) != key:
            return None
        res = RunResult.from_dict(d["result"])
        return None if res.error else (res, d.get("made_by"))  # a run that failed with an exception is retried
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _current_key(key: Any) -> Any:
    """A saved run's key with its recipe read back through ``Recipe.from_dict`` (so a key written before a recipe
    field moved, e.g. ``activations`` into ``transforms``, compares equal to today's); None if it does not load."""
    from ..recipes.recipe import Recipe

    try:
        return json.loads(json.dumps({**key, "recipe": Recipe.from_dict(key["recipe"]).to_dict()}))
    except (TypeError, ValueError, KeyError):
        return None


def _run_key(settings: RunSettings, recipe_spec: dict, numerics_every: int | None) -> dict:
    # through JSON so that a key read back from disk compares equal (tuples become lists)
    return json.loads(json.dumps({"settings": settings.to_dict(), "recipe": recipe_spec,
                                  "numerics_every": numerics_every}))


def _save_run(out: str, res: RunResult, key: dict) -> None:
    io.atomic_write_json(_run_path(out, res.recipe, res.seed),
                         {"key": key, "made_by": provenance.made_by(), "result": res.to_dict()})


def _worker_init(threads: int, tasks: dict[str, bytes], parent: int | None = None) -> None:
    import torch

    if parent is not None:
        from .lifetime import die_with_parent

        die_with_parent(parent)

    torch.set_num_threads(threads)
    for name, blob in tasks.items():
        register_task(name, pickle.loads(blob), replace=True)
    provenance.made_by()  # the sources this worker just imported, read now rather than at its first save


def _worker(task: str, recipe_dict: dict, settings: RunSettings, out: str, key: dict,
            numerics_every: int | None) -> dict:
    from ..recipes.recipe import Recipe

    res = train_run(task, Recipe.from_dict(recipe_dict), settings, progress=False, numerics_every=numerics_every)
    _save_run(out, res, key)
    return res.to_dict()


def _log(quiet: bool, msg: str) -> None:
    """A line on stderr unless ``quiet`` (``_log(False, ...)``: a warning that ``quiet`` does not silence)."""
    if not quiet:
        print(msg, file=sys.stderr, flush=True)


def compare(task: str | None = None, recipes: Sequence[Any] | str | None = None, *, epochs: int | None = None,
            seed: int | None = None, seeds: Sequence[int] | str | None = None, out: str | None = None,
            jobs: int | None = None, config: "str | os.PathLike | CompareConfig | None" = None,
            lr: float | None = None, batch_size: int | None = None, numerics_every: int | None = None,
            numerics: bool | None = None, nproc: int | None = None, grad_hook: str | None = None,
            tensorboard: str | None = None, quiet: bool = False, progress: bool | None = None,
            report: bool = True, rerun_stale: bool = False) -> Comparison:
    """Train ``task`` under each of ``recipes``, once per seed, and write results, plots and report into ``out``.

    ``recipes``: names, ``RecipeEntry``/dicts (name, base, overrides), or a comma-separated string. Arguments
    given here override ``config`` (a TOML path or a CompareConfig), which overrides the defaults (task
    mnist1d-cnn; recipes fp32, bf16, fp8-hybrid, fp8-e5m2, fp8-e5m2-noscale, fp8-ibm; seeds 0, 1, 2; numerics on;
    out lowp-compare; the task's epochs, lr and batch size). ``seed`` N is ``seeds=[N]``; ``seeds`` is a list or a
    comma-separated string. A seed sets the initial weights and the data order, the same for every recipe, so that
    runs pair by seed (the report's Δ and its confidence interval, see ``stats.py``). ``numerics`` False turns the
    per-layer statistics off; ``numerics_every`` sets their interval (default :func:`numerics_interval`).
    ``tensorboard`` DIR writes per-epoch scalars of every recipe and seed there (needs the tensorboard package).
    ``jobs`` > 1 trains runs in that many spawned processes, each with ``max(1, cores // jobs)`` torch threads.
    ``nproc`` > 1 trains each run data-parallel on that many processes (torch.distributed, gloo) with the
    gradient communication hook ``grad_hook`` (``none``, ``adacomp``, ``allreduce:FORMAT[:stochastic][:ef]``; see
    lowp.distributed); results then carry bytes_per_step and compression_ratio. Returns the :class:`Comparison`
    (also written to results.json). A rerun into the same ``out`` reuses finished runs with identical settings;
    one made by another build (``provenance.py``) is reused with a warning, or trained again with ``rerun_stale``.
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
    if isinstance(seeds, str):
        seeds = parse_seeds(seeds)
    if seed is not None and seeds is not None:
        raise ValueError("give either seed or seeds, not both")
    cfg = cfg.replace(task=task, recipes=None if recipes is None else [RecipeEntry.from_any(r).to_dict()
                                                                       for r in recipes],
                      epochs=epochs, seeds=None if seeds is None and seed is None else list(
                          seeds if seeds is not None else [seed]),
                      out=None if out is None else os.fspath(out), jobs=jobs, lr=lr, batch_size=batch_size,
                      numerics_every=numerics_every, numerics=numerics, nproc=nproc, grad_hook=grad_hook)
    the_task = get_task(cfg.task)
    resolved = [(e.name, _resolve(e)) for e in cfg.recipes]
    settings = RunSettings(cfg.task, cfg.seed, cfg.epochs or the_task.epochs, float(cfg.lr or the_task.lr),
                           cfg.batch_size or the_task.batch_size)
    steps_per_epoch = _check_runs(the_task, resolved, settings, cfg)
    every = None
    if cfg.numerics:
        every = cfg.numerics_every or numerics_interval(
            None if steps_per_epoch is None else steps_per_epoch * settings.epochs)
    if tensorboard is not None:
        from .tboard import check_tensorboard

        check_tensorboard(tensorboard)
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
        return _compare_locked(cfg, the_task, resolved, settings, task_blobs, orig_config, quiet, progress, report,
                               every, tensorboard, rerun_stale)


NUMERICS_SAMPLES = 20  # sampled steps per run when the interval is chosen automatically
NUMERICS_MIN_EVERY = 25  # never closer: a sampled step costs one to a few plain steps (see numerics_interval)


def numerics_interval(total_steps: int | None) -> int:
    """The default interval of the numerics statistics: about ``NUMERICS_SAMPLES`` sampled steps per run, and at
    least ``NUMERICS_MIN_EVERY`` steps apart. A sampled step computes the statistics of every quantized tensor role.
    Measured on mnist1d-cnn (a shared 2-core machine, so noisy): CPU time, one thread, fp8-hybrid, best of 3: a
    sampled step costs about one plain step more (0.0081 s against a 0.0082 s step); wall time, bf16 under heavy
    contention: about 2.5 plain steps more. The overhead is that cost / every: 4% to 10% at every 25, 3% to 8% at
    the default run's 32 (630 steps, 20 samples)."""
    if not total_steps:
        return NUMERICS_MIN_EVERY
    return max(NUMERICS_MIN_EVERY, -(-total_steps // NUMERICS_SAMPLES))


def parse_seeds(text: str) -> list[int]:
    """``"0,1,2"`` or a range ``"0-4"`` (inclusive) as a list of seeds; a bad item is a one-line ValueError."""
    out: list[int] = []
    for item in (x.strip() for x in str(text).split(",")):
        if not item:
            continue
        lo, sep, hi = item.partition("-")
        try:
            if sep and lo:
                a, b = int(lo), int(hi)
                if b < a or b - a >= 1000:
                    raise ValueError
                out.extend(range(a, b + 1))
            else:
                out.append(int(item))
        except ValueError:
            raise ValueError(f"seeds: {item!r} is not a seed or a range a-b (e.g. --seeds 0,1,2 or 0-4)") from None
    if not out:
        raise ValueError(f"seeds: no seed in {text!r}")
    return out


def _resolve(entry: RecipeEntry):
    """The entry's Recipe; a bad base, override or value is a one-line ValueError naming the recipe."""
    try:
        return entry.resolve()
    except (ValueError, TypeError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ValueError(msg if entry.name in msg else f"recipe {entry.name!r}: {msg}") from None


def _check_runs(the_task, resolved, settings: RunSettings, cfg: CompareConfig) -> int | None:
    """The part of the validation pass that needs the task: the batch size against the training set, and a dry run
    of every recipe (emulate, optimiser, forward and backward on 2 training samples), so that a bad override or
    transform is a one-line error before anything is written instead of a failed run after training."""
    import torch

    from ..formats import compiling
    from ..recipes.extensions import techniques_of
    from .data import TrainSource
    from .train import apply_recipe

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
        if cfg.nproc > 1:
            for t in techniques_of(recipe):
                if not t.supports_data_parallel:
                    raise ValueError(f"recipe {name!r}: technique {t.name!r} cannot run data-parallel yet "
                                     "(nproc 1 only)")
        # eager kernels (the same bits): the kernels are compiled in the runs' first steps, where first_use_s counts
        # them, not in this check
        with torch.random.fork_rng(devices=[]), compiling.eager_only():
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
    try:
        return src.steps_per_epoch(settings.batch_size, the_task.steps_per_epoch)
    except (TypeError, ValueError):
        return None


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
                    orig_config: str | None, quiet: bool, progress: bool | None, report: bool,
                    every: int | None, tensorboard: str | None, rerun_stale: bool = False) -> Comparison:
    """The writing part of :func:`compare`, run while this process holds the lock on ``cfg.out``."""
    if report:  # import the plotting backend now: a Ctrl-C landing inside its C-extension import aborts Python
        import matplotlib.backends.backend_agg  # noqa: F401
    provenance.made_by()  # this build, read before the first run trains (sources edited during a run do not count)
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

    # ---- resume, per (recipe, seed); runs are trained seed by seed (a whole comparison of the first seed first)
    results: dict[tuple[str, int], RunResult] = {}
    pending = []
    reused, other_build = [], []
    for seed in cfg.seeds:
        s_settings = dataclasses.replace(settings, seed=seed)
        for name, recipe in resolved:
            key = _run_key(s_settings, recipe.to_dict(), every)
            if cfg.nproc > 1:
                key = {**key, "nproc": cfg.nproc, "grad_hook": cfg.grad_hook}
            done = _finished(outdir, name, seed, key)
            stale = done is not None and not provenance.same_build(done[1])
            if done is not None and not (stale and rerun_stale):
                results[(name, seed)] = done[0]
                reused.append(f"{name}@{seed}")
                path = _run_path(outdir, name, seed)
                if stale:
                    other_build.append(f"{name}@{seed}")
                    this = provenance.describe(provenance.made_by())
                    _log(False, f"lowp compare: {name} seed {seed}: reusing {path}, made by "  # not silenced
                         f"{provenance.describe(done[1])}, not this build ({this}); its bits may differ "
                         "(--rerun-stale trains it again)")
                else:
                    _log(quiet, f"lowp compare: {name} seed {seed}: reusing finished run {path}")
            else:
                pending.append((name, recipe, s_settings, key))

    # ---- train
    if pending:
        _log(quiet, f"lowp compare: {cfg.task} ({the_task.metric_name}), {settings.epochs} epochs, seeds "
                    f"{','.join(map(str, cfg.seeds))}: {len(pending)} runs to train"
                    + (f" on {cfg.jobs} processes" if cfg.jobs > 1 else "")
                    + (f"; numerics every {every} steps" if every else ""))
    show = (not quiet) if progress is None else progress
    show = show and sys.stderr.isatty() if progress is None else show

    def done(name: str, res: RunResult) -> None:
        results[(name, res.seed)] = res
        _log(quiet, f"lowp compare: {name} seed {res.seed}: {_one_line(res, the_task.metric_unit)}")
        if tensorboard is not None:
            from .tboard import write_run

            write_run(tensorboard, res)

    if cfg.jobs == 1 or len(pending) <= 1 or cfg.nproc > 1:
        for name, recipe, s_settings, key in pending:
            if cfg.nproc > 1:
                res = _data_parallel_run(cfg, recipe, s_settings, every)
            else:
                res = train_run(the_task, recipe, s_settings, progress=show, numerics_every=every)
            _save_run(outdir, res, key)
            done(name, res)
    else:
        from tqdm.auto import tqdm

        threads = max(1, (os.cpu_count() or 1) // cfg.jobs)
        with cf.ProcessPoolExecutor(max_workers=min(cfg.jobs, len(pending)), mp_context=mp.get_context("spawn"),
                                    initializer=_worker_init, initargs=(threads, task_blobs, os.getpid())) as ex:
            futs = {ex.submit(_worker, cfg.task, recipe.to_dict(), s_settings, outdir, key, every): name
                    for name, recipe, s_settings, key in pending}
            with tqdm(total=len(futs), desc="runs", disable=not show, leave=False) as bar:
                for fut in cf.as_completed(futs):
                    done(futs[fut], RunResult.from_dict(fut.result()))
                    bar.update(1)

    runs = _with_deltas([results[(name, seed)] for name, _ in resolved for seed in cfg.seeds])
    from .hwcost import model_shapes

    comp = Comparison(cfg.task, cfg.seed, settings.epochs, settings.lr, settings.batch_size,
                      the_task.metric_name, runs, outdir, tuple(reused), the_task.higher_is_better,
                      the_task.metric_unit, tuple(cfg.seeds), model_shapes(the_task, settings.batch_size),
                      tuple(other_build))
    io.atomic_write_json(os.path.join(outdir, "results.json"), comp.to_dict())
    if report:
        from .report import render

        render(comp, outdir)
    return comp


def _data_parallel_run(cfg: CompareConfig, recipe, settings: RunSettings, every: int | None) -> RunResult:
    """One recipe trained data-parallel (``parallel.run_data_parallel``); a failure is reported as this run's error."""
    import dataclasses as dc

    from .parallel import run_data_parallel

    try:
        d = run_data_parallel(cfg.task, recipe, settings, nproc=cfg.nproc, hook=cfg.grad_hook,
                              numerics_every=every)
    except Exception as e:  # noqa: BLE001 - reported per recipe, the comparison goes on
        return RunResult(recipe=recipe.name, metric=None, metric_name=get_task(cfg.task).metric_name,
                         diverged=False, history=(), skipped_steps=0, wall_s=0.0, steps=0,
                         settings=settings.to_dict(), recipe_spec=recipe.to_dict(), nproc=cfg.nproc,
                         grad_hook=cfg.grad_hook,
                         error=f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
    res = RunResult.from_dict(d)
    return dc.replace(res, nproc=cfg.nproc, grad_hook=cfg.grad_hook, bytes_per_step=d.get("bytes_per_step"),
                      compression_ratio=d.get("compression_ratio"))


def _one_line(r: RunResult, unit: str = "fraction") -> str:
    from .report import metric_text

    if r.error:
        return f"error ({r.error}) after {r.wall_s:.1f}s"
    m = "-" if r.metric is None else f"{r.metric_name} {metric_text(r.metric, unit)}"
    return f"{'DIVERGED, ' if r.diverged else ''}{m}, {r.skipped_steps} skipped steps, {r.wall_s:.1f}s"
