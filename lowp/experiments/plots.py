"""The compare report's plots over seeds (matplotlib, Agg canvas, no global state touched; PNGs written
atomically):

- ``curves(...)``: a per-epoch quantity, one line per recipe (the mean over seeds) with a band from the lowest to
  the highest seed (one seed: the line alone);
- ``delta_plot(...)``: the final metric's difference to FP32 per recipe, best first, as points with 95% confidence
  bars from the paired differences (``stats.paired_interval``) and each seed's difference as a small dot, on an axis
  scaled to the differences (0 = FP32 drawn as a line). Colours: red = worse than FP32 beyond seed noise, green =
  better beyond seed noise, grey = not distinguishable (or one seed).
"""
from __future__ import annotations

import io as _io
from collections import defaultdict

from . import io


def figure(w: float = 6.4, h: float = 4.0):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def save(fig, path: str) -> None:
    buf = _io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight", metadata={"Software": None})
    io.atomic_write_bytes(path, buf.getvalue())


def seed_series(runs, key: str, scale: float = 1.0, positive: bool = False) -> dict[int, list[float]]:
    """epoch -> the values of ``key`` over ``runs`` (seeds) at that epoch (non-finite/None left out)."""
    by: dict[int, list[float]] = defaultdict(list)
    for r in runs:
        for h in r.history:
            v = h.get(key)
            if v is None or (positive and v <= 0):
                continue
            by[int(h["epoch"])].append(scale * float(v))
    return dict(sorted(by.items()))


def curves(comp, key: str, ylabel: str, path: str, scale: float = 1.0, log: bool = False) -> None:
    fig = figure()
    ax = fig.add_subplot()
    for i, name in enumerate(comp.recipes):
        runs = comp.runs_of(name)
        series = seed_series(runs, key, scale, positive=log)
        if not series:
            continue
        ep = list(series)
        mean = [sum(v) / len(v) for v in series.values()]
        diverged = any(r.diverged for r in runs)
        color = f"C{i % 10}"
        label = name + (" (diverged)" if diverged else "") + (f" (n={len(runs)})" if len(runs) > 1 else "")
        ax.plot(ep, mean, marker="o", ms=3, ls="--" if diverged else "-", color=color, label=label)
        if len(runs) > 1:
            ax.fill_between(ep, [min(v) for v in series.values()], [max(v) for v in series.values()], color=color,
                            alpha=0.15, lw=0)
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    band = ", band: lowest to highest seed" if len(comp.seeds) > 1 else ""
    ax.set_title(f"{comp.task}: {ylabel} (mean over seeds{band})", fontsize=9)
    save(fig, path)


def delta_plot(comp, summaries, path: str, scale: float, unit: str, higher_is_better: bool) -> None:
    """``summaries``: RecipeSummary objects best first, FP32 excluded, each with a delta."""
    fig = figure(max(5.0, 0.9 * len(summaries) + 2.5), 4.0)
    ax = fig.add_subplot()
    ref = {r.seed: r.metric for r in comp.runs_of("fp32") if r.status == "ok" and r.metric is not None}
    for i, s in enumerate(summaries):
        d = s.delta
        worse = (d.mean < 0) == higher_is_better if d.mean else False
        color = ("tab:gray" if not d.significant else "tab:red" if worse else "tab:green")
        if d.lo is not None:
            ax.errorbar([i], [scale * d.mean], yerr=[[scale * (d.mean - d.lo)], [scale * (d.hi - d.mean)]],
                        fmt="o", color=color, capsize=4, ms=6)
        else:
            ax.plot([i], [scale * d.mean], "o", color=color, ms=6)
        pts = [scale * (r.metric - ref[r.seed]) for r in comp.runs_of(s.recipe)
               if r.status == "ok" and r.metric is not None and r.seed in ref]
        ax.plot([i + 0.15] * len(pts), pts, ".", color=color, alpha=0.5, ms=4)
    ax.axhline(0.0, color="k", lw=1, ls="--", label="FP32")
    ax.set_xticks(range(len(summaries)))
    ax.set_xticklabels([s.recipe for s in summaries], rotation=30, ha="right", fontsize=8)
    better = "higher is better" if higher_is_better else "lower is better"
    ax.set_ylabel(f"Δ {comp.metric_name} ({unit})\n{better}", fontsize=9)
    n = len(comp.seeds)
    bars = f"bars: 95% CI of the paired difference over {n} seeds" if n > 1 else "one seed: no interval"
    ax.set_title(f"{comp.task}: final {comp.metric_name} − FP32's, best first\n({bars}; dots: single seeds; "
                 "red/green: beyond seed noise)", fontsize=9)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)
    save(fig, path)
