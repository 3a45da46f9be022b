"""One summary per recipe over the seeds of a comparison: mean ± sd of the final metric, the paired difference to
FP32 with its 95% confidence interval (``stats.paired_interval``), and the timing split.

Which runs count: the metric's mean and sd are over the recipe's finished runs (status ok); a recipe none of whose
runs finished falls back to its diverged runs' metrics (so that it still ranks, after the finished ones). The
difference to FP32 pairs seed with seed, over the seeds where both runs finished. Timing: ``first_use_s`` is the
largest first-use (compilation / warm-up) time of the recipe's runs (the first run of a recipe in a process pays
it; later seeds reuse the compiled kernels), ``step_s`` the median of the runs' steady-state step times and
``step_ratio`` that over FP32's; ``peak_rss_mb`` the largest process peak RSS seen at the end of one of its runs.
"""
from __future__ import annotations

import dataclasses
import statistics
from typing import Any, Sequence

from .stats import PairedInterval, mean_sd, paired_interval

REFERENCE = "fp32"


def run_seed(r) -> int:
    """The seed a run was trained with (its settings; 0 when absent)."""
    return int((r.settings or {}).get("seed", 0))


@dataclasses.dataclass(frozen=True)
class RecipeSummary:
    recipe: str
    seeds: tuple[int, ...]
    metric: float | None
    metric_sd: float | None
    n_finished: int
    status: str
    diverged: bool
    delta: PairedInterval | None
    skipped_steps: int
    epochs: int
    wall_s: float
    first_use_s: float | None
    step_s: float | None
    step_ratio: float | None
    peak_rss_mb: float | None
    gemm_emulated: float | None
    errors: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["seeds"] = list(self.seeds)
        d["errors"] = list(self.errors)
        return d


def recipe_names(runs: Sequence) -> list[str]:
    """Recipe names in first-appearance order."""
    seen: dict[str, None] = {}
    for r in runs:
        seen.setdefault(r.recipe, None)
    return list(seen)


def _status(runs: Sequence) -> str:
    n = len(runs)
    for bad in ("error", "diverged"):
        k = sum(r.status == bad for r in runs)
        if k:
            return bad if k == n else f"{bad} {k}/{n}"
    return "ok"


def _median(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


def summarize(runs: Sequence) -> list[RecipeSummary]:
    """One :class:`RecipeSummary` per recipe, in the runs' order."""
    by: dict[str, list] = {n: [] for n in recipe_names(runs)}
    for r in runs:
        by[r.recipe].append(r)
    ref_ok = {run_seed(r): r.metric for r in by.get(REFERENCE, ()) if r.status == "ok" and r.metric is not None}
    ref_step = _median([r.step_s for r in by.get(REFERENCE, ()) if getattr(r, "step_s", None)])
    out = []
    for name, rs in by.items():
        ok = [r for r in rs if r.status == "ok" and r.metric is not None]
        vals = [r.metric for r in ok] or [r.metric for r in rs if r.metric is not None]
        m, sd = mean_sd(vals)
        delta = None
        if ref_ok and name != REFERENCE:
            diffs = [r.metric - ref_ok[run_seed(r)] for r in ok if run_seed(r) in ref_ok]
            delta = paired_interval(diffs) if diffs else None
        elif ref_ok and name == REFERENCE:
            delta = paired_interval([0.0] * len(ok)) if ok else None
        steps = [r.step_s for r in rs if getattr(r, "step_s", None)]
        step = _median(steps)
        firsts = [r.first_use_s for r in rs if getattr(r, "first_use_s", None) is not None]
        rss = [r.peak_rss_mb for r in rs if getattr(r, "peak_rss_mb", None) is not None]
        out.append(RecipeSummary(
            recipe=name, seeds=tuple(run_seed(r) for r in rs), metric=m, metric_sd=sd, n_finished=len(ok),
            status=_status(rs), diverged=any(r.diverged for r in rs), delta=delta,
            skipped_steps=max((r.skipped_steps for r in rs), default=0),
            epochs=max((len(r.history) for r in rs), default=0), wall_s=round(sum(r.wall_s for r in rs), 3),
            first_use_s=max(firsts) if firsts else None, step_s=step,
            step_ratio=None if step is None or not ref_step else step / ref_step,
            peak_rss_mb=max(rss) if rss else None,
            gemm_emulated=next((r.gemm_emulated for r in rs if r.gemm_emulated is not None), None),
            errors=tuple(r.error for r in rs if r.error)))
    return out
