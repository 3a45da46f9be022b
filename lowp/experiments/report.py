"""The compare report: terminal tables, PNG plots and one offline HTML page (``report.html``) referencing them.

The runs of a comparison are recipes × seeds; the tables and verdicts summarise each recipe over its seeds
(``aggregate.summarize``): the final metric's mean ± sd, its difference Δ to FP32 paired by seed with a 95%
confidence interval and a mark whether the difference is distinguishable from seed noise (``stats.py`` documents
the test), and the timing split: first-use (compilation / warm-up) seconds, steady-state step time, that step as
× FP32's step (the emulation cost on this machine) and the process's peak RSS.

Plots (``plots.py``): ``loss.png`` and ``metric.png`` (per-epoch curves, mean over seeds with a band from the lowest
to the highest seed), ``delta.png`` (Δ vs FP32 with confidence bars, best first), per recipe with numerics records
``numerics-<recipe>.png`` (heat maps). The hardware estimate section (``hwcost.py``) comes from the model shapes
stored in results.json.

NUMERICS EXTENSION POINT: ``render(comparison, out, numerics=...)`` takes per-layer, per-role statistics records
``{"layer", "role", "step", "underflow", "overflow", "subnormal", "sqnr_db", "amax"}`` (fractions in [0, 1], SQNR in
dB; extra keys ignored), either as ``{recipe: [records]}``, or as one list whose records carry a ``"recipe"`` key;
records stored in the runs (``RunResult.numerics``, filled by the analysis layer's collector; all seeds pooled) are
used when ``numerics`` is None. For each recipe it draws heat maps of underflow and overflow (layer × role, mean over
the sampled steps), the SQNR per layer and role, and the underflow of each role over training.
"""
from __future__ import annotations

import html
import math
import os
from collections import defaultdict
from typing import Any, Iterable, Mapping, Sequence

from . import io
from .plots import curves, delta_plot, figure, save
from .report_techniques import technique_cells, technique_columns, technique_sections

COLUMNS = ("recipe", "metric", "delta_fp32", "ci", "verdict", "status", "skipped", "epochs", "seeds")
TIMING_COLUMNS = ("recipe", "first_use_s", "step_ms", "step_x", "wall_s", "peak_rss")
HEADERS = {"recipe": "recipe", "metric": "{metric} %", "delta_fp32": "Δ fp32 (pts)", "delta_rel": "Δ fp32 %",
           "ci": "95% CI of Δ", "verdict": "vs seed noise", "seeds": "seeds", "status": "status",
           "skipped": "skipped steps", "epochs": "epochs run", "wall_s": "total s", "comm": "comm bytes/step (×)",
           "gemm": "GEMM FLOPs emulated %", "first_use_s": "first use s", "step_ms": "step ms",
           "step_x": "× fp32 step", "peak_rss": "process peak RSS MiB"}
ROLE_ORDER = ("input", "weight", "output", "grad_output", "grad_input", "grad_weight", "nongemm")


def _fraction(comp_or_unit) -> bool:
    unit = comp_or_unit if isinstance(comp_or_unit, str) else getattr(comp_or_unit, "metric_unit", "fraction")
    return unit == "fraction"


def _pct(v: float | None, unit: str = "fraction") -> str:
    if v is None:
        return "-"
    return f"{100 * v:.2f}" if _fraction(unit) else f"{v:.4f}"


def _delta(v: float | None, unit: str = "fraction") -> str:
    if v is None:
        return "-"
    return f"{100 * v:+.2f}" if _fraction(unit) else f"{v:+.4f}"


def metric_text(v: float, unit: str = "fraction") -> str:
    """A metric value with its unit: ``95.20%`` for a fraction, ``1.2345 nats/token`` otherwise."""
    return f"{100 * v:.2f}%" if _fraction(unit) else f"{v:.4f} {unit}"


def summaries(comp) -> list:
    """One RecipeSummary per recipe (``aggregate.summarize``)."""
    from .aggregate import summarize

    return summarize(comp.runs)


def _reference(comp):
    return next((s for s in summaries(comp) if s.recipe == "fp32" and s.metric is not None and s.n_finished), None)


def relative_delta(comp, s) -> float | None:
    """mean Δ / |mean metric(fp32)| of a RecipeSummary (None without both, or when FP32's mean is 0)."""
    ref = _reference(comp)
    d = getattr(s, "delta", None)
    if ref is None or d is None or d.mean is None or ref.metric == 0:
        return None
    return d.mean / abs(ref.metric)


def _higher(comp) -> bool:
    return getattr(comp, "higher_is_better", True)


def _rank(status: str) -> int:
    return 0 if status == "ok" else 2 if status == "error" else 1


def ranked(comp) -> list:
    """The recipes (RecipeSummary) best first: by the mean final metric in the metric's direction (highest first,
    or lowest first when lower is better), finished before (partly) diverged before failed, recipes without a metric
    last; ties keep the table's order."""
    sign = -1.0 if _higher(comp) else 1.0
    return sorted(summaries(comp), key=lambda s: (s.metric is None, _rank(s.status),
                                                  0.0 if s.metric is None else sign * s.metric))


def verdict(comp, s) -> str:
    """``worse`` / ``better``: the 95% CI of Δ excludes 0 (in the metric's direction); ``noise``: it contains 0;
    ``ref``: fp32 itself; ``-``: fewer than 2 paired seeds."""
    if s.recipe == "fp32":
        return "ref"
    d = s.delta
    if d is None or d.significant is None:
        return "-"
    if not d.significant:
        return "noise"
    return "better" if (d.mean > 0) == _higher(comp) else "worse"


def _seeded(comp) -> bool:
    """True when some recipe has a confidence interval (2 or more paired seeds)."""
    return any(s.delta is not None and s.delta.lo is not None for s in summaries(comp) if s.recipe != "fp32")


def summary_lines(comp, tol: float | None = None) -> list[str]:
    """Plain-language verdicts: the ranking (best first, by the mean over seeds); then, against FP32: with two or
    more paired seeds, which recipes differ beyond seed noise (the 95% CI of the paired Δ excludes 0) and which do
    not; with one seed, which finished recipes are within ``tol`` (default 1 percentage point for a fraction metric,
    else 1% of FP32's value), better, or worse, in the metric's direction (diverged and failed runs left out)."""
    lines = [f"ranking, best first ({'higher' if _higher(comp) else 'lower'} {comp.metric_name} is better): "
             + ", ".join(s.recipe + (" (diverged)" if s.diverged and s.status != "ok" else "")
                         for s in ranked(comp) if s.metric is not None)]
    ref = _reference(comp)
    if ref is None:
        return lines
    frac = _fraction(comp)
    if _seeded(comp):
        unit = " points" if frac else f" {comp.metric_unit}"
        scale = 100.0 if frac else 1.0
        digits = 2 if frac else 4
        groups: dict[str, list[str]] = {"worse": [], "better": [], "noise": []}
        for s in ranked(comp):
            v = verdict(comp, s)
            if v in groups and s.delta.lo is not None:
                groups[v].append(f"{s.recipe} ({scale * s.delta.mean:+.{digits}f}{unit}, 95% CI "
                                 f"[{scale * s.delta.lo:+.{digits}f}, {scale * s.delta.hi:+.{digits}f}])")
        n = len(comp.seeds)
        for key, what in (("better", "better than fp32 beyond seed noise"),
                          ("worse", "worse than fp32 beyond seed noise")):
            if groups[key]:
                lines.append(f"{what} ({n} seeds, paired t, 95%): " + ", ".join(groups[key]))
        if groups["noise"]:
            lines.append("not distinguishable from fp32 (the 95% CI of Δ contains 0): " + ", ".join(groups["noise"]))
        return lines
    tol = 0.01 if tol is None else tol
    within, better, worse = [], [], []
    for s in summaries(comp):
        if s.recipe == "fp32" or s.metric is None or s.status != "ok":
            continue
        d = s.metric - ref.metric
        size = abs(d) if frac else abs(d) / abs(ref.metric) if ref.metric else math.inf
        gain = d > 0 if _higher(comp) else d < 0
        amount = f"{100 * size:.2f}{' points' if frac else '%'}"
        if size <= tol:
            within.append(f"{s.recipe} ({amount} {'better' if gain else 'worse'})" if d else f"{s.recipe} (equal)")
        else:
            (better if gain else worse).append(f"{s.recipe} ({amount})")
    what = f"{100 * tol:g} {'point' if 100 * tol == 1 else 'points'}" if frac else f"{100 * tol:g}%"
    if within:
        lines.append(f"within {what} of fp32: " + ", ".join(within))
    if better:
        lines.append(f"better than fp32 by more than {what}: " + ", ".join(better))
    if worse:
        lines.append(f"worse than fp32 by more than {what}: " + ", ".join(worse))
    lines.append("one seed: differences not tested against seed noise (run several: --seeds 0,1,2)")
    return lines


def format_summary(comp) -> str:
    """:func:`summary_lines` as text."""
    return "\n".join(summary_lines(comp))


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{1000 * v:.1f}"


def table_rows(comp) -> list[dict[str, str]]:
    """One dict of display strings per recipe (the same cells in the terminal tables and the HTML tables): the
    mean ± sd over seeds of a fraction metric in percent and the mean Δ in percentage points with 2 decimals
    (another metric: 4 decimals, plus Δ in percent of FP32's mean); the 95% CI of Δ; the :func:`verdict`; timing
    (first use s, steady step ms, × FP32's step, total s over seeds) and the process's peak RSS in MiB."""
    rows = []
    unit = getattr(comp, "metric_unit", "fraction")
    frac = _fraction(unit)
    scale = 100.0 if frac else 1.0
    fmt = "{:+.2f}" if frac else "{:+.4f}"
    for s in summaries(comp):
        rel = relative_delta(comp, s)
        d = s.delta
        metric = _pct(s.metric, unit)
        if s.metric_sd is not None:
            metric += f" ± {scale * s.metric_sd:.2f}" if frac else f" ± {s.metric_sd:.4f}"
        r0 = comp.runs_of(s.recipe)[0]
        rows.append({"recipe": s.recipe, "metric": metric,
                     "delta_fp32": "-" if d is None or d.mean is None else _delta(d.mean, unit),
                     "delta_rel": "-" if rel is None else f"{100 * rel:+.2f}",
                     "ci": "-" if d is None or d.lo is None or s.recipe == "fp32" else
                     f"[{fmt.format(scale * d.lo)}, {fmt.format(scale * d.hi)}]",
                     "verdict": verdict(comp, s), "seeds": str(len(s.seeds)),
                     "status": s.status, "skipped": str(s.skipped_steps), "epochs": str(s.epochs),
                     "wall_s": f"{s.wall_s:.1f}",
                     "first_use_s": "-" if s.first_use_s is None else f"{s.first_use_s:.1f}",
                     "step_ms": _ms(s.step_s), "step_x": "-" if s.step_ratio is None else f"{s.step_ratio:.2f}",
                     "peak_rss": "-" if s.peak_rss_mb is None else f"{s.peak_rss_mb:.0f}",
                     **technique_cells(comp, r0),
                     "comm": "-" if r0.bytes_per_step is None else
                     f"{r0.bytes_per_step:.0f} ({r0.compression_ratio:.1f}×)",
                     "gemm": "-" if s.gemm_emulated is None else f"{100 * s.gemm_emulated:.1f}"})
    return rows


def columns(comp) -> tuple[str, ...]:
    """The summary table's columns: the fixed ones, plus GEMM coverage, the techniques' columns (e.g. AutoSparse's
    sparsity and FLOPs; ``report_techniques.py``) and communication when some run has them."""
    cols = COLUMNS
    if not _fraction(comp):
        cols = cols[:3] + ("delta_rel",) + cols[3:]
    if any(r.gemm_emulated is not None for r in comp.runs):
        cols += ("gemm",)
    cols += tuple(c.key for c in technique_columns(comp))
    if any(r.bytes_per_step is not None for r in comp.runs):
        cols += ("comm",)
    return cols


def _headers(comp, cols=None) -> list[str]:
    heads = dict(HEADERS)
    heads.update({c.key: c.header.replace("{", "{{").replace("}", "}}") for c in technique_columns(comp)})
    arrow = "" if _higher(comp) else " ↓"  # lower is better
    if _fraction(comp):
        heads.update(metric=heads["metric"] + arrow)
    else:
        heads.update(metric=f"{{metric}} ({comp.metric_unit}){arrow}", delta_fp32=f"Δ fp32 ({comp.metric_unit})")
    if len(comp.seeds) > 1:
        heads.update(metric=heads["metric"] + " mean ± sd")
    return [heads[c].format(metric=comp.metric_name) for c in (columns(comp) if cols is None else cols)]


def _text_table(head: list[str], cells: list[list[str]]) -> str:
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(head)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(c, widths)).rstrip() for c in cells]
    return "\n".join(lines)


def format_table(comp) -> str:
    """The summary table as aligned text (columns separated by at least two spaces)."""
    return _text_table(_headers(comp), [[row[c] for c in columns(comp)] for row in table_rows(comp)])


def format_timing(comp) -> str:
    """The timing table as aligned text."""
    return _text_table(_headers(comp, TIMING_COLUMNS), [[row[c] for c in TIMING_COLUMNS] for row in table_rows(comp)])


TIMING_NOTE = ("first use: what the first training steps cost beyond steady steps (kernel compilation, warm-up; the "
               "largest over seeds, as later seeds reuse compiled kernels); step: the median steady-state training "
               "step (forward, backward, optimizer; evaluation excluded), median over seeds; × fp32 step: the "
               "emulation cost on this machine, not a hardware speed-up; process peak RSS: the training process's "
               "own peak resident memory (getrusage ru_maxrss) at the end of the recipe's runs: runs share one "
               "process, so it is the peak over every run up to then, not this recipe's alone. Not included: the "
               "validation dry run before training (2 samples per recipe), which may compile some kernels first.")



# ------------------------------------------------------------------------------------ numerics section

def group_numerics(numerics: Any, comp=None) -> dict[str, list[dict]]:
    """Normalise numerics input to ``{recipe: [records]}`` (see module docstring)."""
    if numerics is None:
        if comp is None:
            return {}
        pooled: dict[str, list[dict]] = {}
        for r in comp.runs:  # every seed's records, pooled per recipe
            if r.numerics:
                pooled.setdefault(r.recipe, []).extend(r.numerics)
        return pooled
    if isinstance(numerics, Mapping):
        return {str(k): list(v) for k, v in numerics.items() if v}
    out: dict[str, list[dict]] = defaultdict(list)
    for rec in numerics:
        out[str(rec.get("recipe", "?"))].append(rec)
    return dict(out)


def _order(values: Iterable[str], preferred: Sequence[str] = ()) -> list[str]:
    seen: list[str] = []
    for v in values:
        if v not in seen:
            seen.append(v)
    return sorted(seen, key=lambda v: (preferred.index(v) if v in preferred else len(preferred), seen.index(v)))


def numerics_matrix(records: Sequence[dict], key: str) -> tuple[list[str], list[str], list[list[float]]]:
    """(layers, roles, mean of ``key`` per layer × role over steps; NaN where absent)."""
    layers = _order(str(r["layer"]) for r in records)
    roles = _order((str(r["role"]) for r in records), ROLE_ORDER)
    acc: dict[tuple[str, str], list[float]] = defaultdict(list)
    for r in records:
        v = r.get(key)
        if v is not None and math.isfinite(float(v)):
            acc[(str(r["layer"]), str(r["role"]))].append(float(v))
    m = [[(sum(acc[(l, ro)]) / len(acc[(l, ro)])) if acc[(l, ro)] else float("nan") for ro in roles]
         for l in layers]
    return layers, roles, m


def _heat(fig, ax, layers, roles, m, title: str) -> None:
    import numpy as np

    a = np.array(m, dtype=float) * 100
    im = ax.imshow(np.ma.masked_invalid(a), aspect="auto", cmap="magma_r", vmin=0,
                   vmax=max(1.0, np.nanmax(a) if np.isfinite(a).any() else 1.0))  # at least 1%
    ax.set_xticks(range(len(roles)))
    ax.set_xticklabels(roles, rotation=30, ha="right", fontsize=7)
    ax.set_yticks(range(len(layers)))
    ax.set_yticklabels(layers, fontsize=7)
    for i in range(a.shape[0]):
        for j in range(a.shape[1]):
            if np.isfinite(a[i, j]):
                ax.text(j, i, f"{a[i, j]:.2g}", ha="center", va="center", fontsize=6, color="tab:cyan")
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="% of values")


def render_numerics(recipe: str, records: Sequence[dict], path: str) -> None:
    """One figure for one recipe: underflow and overflow heat maps (layer × role), SQNR per layer and role, and the
    underflow of each role (mean over layers) against the training step."""
    import numpy as np

    layers, roles, under = numerics_matrix(records, "underflow")
    _, _, over = numerics_matrix(records, "overflow")
    _, _, sqnr = numerics_matrix(records, "sqnr_db")
    fig = figure(13, 3.2 + 0.25 * len(layers))
    ax1, ax2, ax3, ax4 = (fig.add_subplot(1, 4, i) for i in range(1, 5))
    _heat(fig, ax1, layers, roles, under, f"{recipe}: underflow (flushed to 0)")
    _heat(fig, ax2, layers, roles, over, f"{recipe}: overflow / saturated")
    s = np.array(sqnr, dtype=float)
    width = 0.8 / max(1, len(roles))
    for j, ro in enumerate(roles):
        ax3.barh(np.arange(len(layers)) + j * width, np.nan_to_num(s[:, j], nan=0.0), height=width, label=ro)
    ax3.set_yticks(np.arange(len(layers)) + 0.4 - width / 2)
    ax3.set_yticklabels(layers, fontsize=7)
    ax3.invert_yaxis()
    ax3.set_xlabel("SQNR (dB)")
    ax3.set_title("SQNR per layer", fontsize=9)
    ax3.legend(fontsize=6)
    by: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        if r.get("underflow") is not None and r.get("step") is not None:
            by[str(r["role"])][int(r["step"])].append(100 * float(r["underflow"]))
    for ro in roles:
        if ro in by:
            steps = sorted(by[ro])
            ax4.plot(steps, [sum(by[ro][t]) / len(by[ro][t]) for t in steps], label=ro)
    ax4.set_xlabel("step")
    ax4.set_ylabel("underflow % (mean over layers)")
    ax4.set_title("underflow over training", fontsize=9)
    ax4.legend(fontsize=6)
    fig.tight_layout()
    save(fig, path)


# ------------------------------------------------------------------------------------------------ HTML

_CSS = """body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}
td:first-child,th:first-child{text-align:left}tr.bad td{background:#fde8e8}img{max-width:100%}
code{background:#f4f4f4;padding:0 3px}details{margin:.3em 0}
p.warn{background:#fff4d6;border-left:4px solid #e0a800;padding:6px 10px}"""


def _html_table(comp, table_id: str = "summary", cols=None) -> str:
    cols = columns(comp) if cols is None else cols
    head = "".join(f"<th>{html.escape(h)}</th>" for h in _headers(comp, cols))
    body = []
    for row in table_rows(comp):
        cls = ' class="bad"' if row["status"] != "ok" else ""
        body.append(f"<tr{cls}>" + "".join(f"<td>{html.escape(row[c])}</td>" for c in cols) + "</tr>")
    return f'<table id="{table_id}"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def _sampling(groups: dict[str, list[dict]]) -> str:
    """`` (training steps 0, 27, 54, …: one in 27, 24 sampled steps)`` from the records' step indices, or ``""``."""
    steps = sorted({int(r["step"]) for recs in groups.values() for r in recs if r.get("step") is not None})
    if len(steps) < 2:
        return ""
    every = steps[1] - steps[0]
    return f" (training steps {', '.join(map(str, steps[:3]))}, …: one in {every}, {len(steps)} sampled steps)"


def _delta_section(comp, out: str) -> list[str]:
    ref = _reference(comp)
    rest = [x for x in ranked(comp) if x.recipe != "fp32" and x.delta is not None and x.delta.mean is not None]
    if ref is None or not rest:
        return ["<h2>Difference to FP32</h2><p>No finished fp32 run: no differences to draw.</p>"]
    frac = _fraction(comp)
    delta_plot(comp, rest, os.path.join(out, "delta.png"), 100.0 if frac else 1.0,
               "percentage points" if frac else comp.metric_unit, _higher(comp))
    return ["<h2>Difference to FP32</h2>",
            "<img src='delta.png' alt='difference of the final metric to FP32 per recipe, with confidence bars'>"]


def _other_build_note(comp) -> list[str]:
    """A warning paragraph when some runs were reused from another build (``provenance.py``), else nothing."""
    other = getattr(comp, "reused_other_build", ())
    if not other:
        return []
    return [f"<p class='warn'><b>{len(other)} of {len(comp.runs)} runs were made by another lowp build</b> "
            "(another lowp or torch version, edited sources, or a lowp that did not record its build) and reused "
            f"here: {html.escape(', '.join(other))}. Their bits may differ from this build's; "
            "<code>lowp compare --rerun-stale</code> trains them again.</p>"]


def render(comp, out: str, numerics: Any = None) -> str:
    """Write the plots and ``report.html`` for ``comp`` into ``out``; returns the HTML path. The page depends on
    ``comp`` alone (no clock, no host): rendering the same results twice gives the same files."""
    from .report_hw import hardware_section

    os.makedirs(out, exist_ok=True)
    frac = _fraction(comp)
    curves(comp, "train_loss", "training loss", os.path.join(out, "loss.png"), log=True)
    unit = "%" if frac else comp.metric_unit
    better = "" if _higher(comp) else ", lower is better"
    curves(comp, "test_metric", f"test {comp.metric_name} ({unit}{better})", os.path.join(out, "metric.png"),
           scale=100.0 if frac else 1.0)
    e = html.escape
    direction = "higher" if _higher(comp) else "lower"
    if frac:
        how = f"test {e(comp.metric_name)} ({direction} is better); Δ fp32 in percentage points"
    else:
        how = (f"test {e(comp.metric_name)} in {e(comp.metric_unit)} ({direction} is better); Δ fp32 = metric − "
               f"FP32's, in {e(comp.metric_unit)} and in percent of FP32's")
    seeds = ", ".join(map(str, comp.seeds))
    n = len(comp.seeds)
    test = ("Δ is the mean over seeds of the paired difference metric(recipe, seed) − metric(fp32, seed); its 95% "
            f"confidence interval is the paired t interval (Student t, {n - 1} degrees of freedom); <i>worse</i> / "
            "<i>better</i> mark an interval that excludes 0, <i>noise</i> one that contains it."
            if n > 1 else "One seed: no confidence interval; differences are not tested against seed noise.")
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>lowp compare: {e(comp.task)}</title>"
             f"<style>{_CSS}</style></head><body>",
             f"<h1>lowp compare: {e(comp.task)}</h1>",
             f"<p>{len(comp.recipes)} recipes × {n} seed{'s' if n > 1 else ''} ({e(seeds)}), "
             f"{comp.epochs} epoch{'s' if comp.epochs != 1 else ''}, lr {comp.lr:g}, batch size {comp.batch_size}; "
             "a seed sets the initial weights and the data order, "
             f"the same for every recipe. Metric: {how}. {test} Raw numbers (every run and the aggregates): "
             "<a href='results.json'>results.json</a>; repeat with <code>lowp compare --config config.toml</code>."
             "</p>",
             *_other_build_note(comp),
             "<h2>Summary</h2>", _html_table(comp),
             "<ul id='verdict'>" + "".join(f"<li>{e(x)}</li>" for x in summary_lines(comp)) + "</ul>"]
    for r in comp.runs:
        tag = f"{e(r.recipe)}</b> (seed {r.seed})" if n > 1 else f"{e(r.recipe)}</b>"
        if r.error:
            parts.append(f"<p><b>{tag} failed: <code>{e(r.error)}</code></p>")
        elif r.diverged:
            parts.append(f"<p><b>{tag} diverged (non-finite loss) at {e(str(r.diverged_at))}.</p>")
    parts += _delta_section(comp, out)
    parts += ["<h2>Training</h2>", "<img src='loss.png' alt='training loss per epoch'>",
              "<img src='metric.png' alt='test metric per epoch'>",
              "<h2>Timing and memory (this machine)</h2>", _html_table(comp, "timing", TIMING_COLUMNS),
              f"<p>{e(TIMING_NOTE)}</p>"]
    parts += technique_sections(comp, out)
    groups = group_numerics(numerics, comp)
    if groups:  # the numerics section (see module docstring)
        parts.append("<h2>Numerics per layer and role</h2><p>Underflow: fraction of nonzero values flushed to 0; "
                     "overflow: fraction saturated or overflowed; SQNR of the quantized tensor against its "
                     "unquantized value. Means over the sampled steps"
                     + (" of every seed" if n > 1 else "") + _sampling(groups) + ".</p>")
        for name, recs in groups.items():
            fn = f"numerics-{io.safe_filename(name)}.png"
            render_numerics(name, recs, os.path.join(out, fn))
            parts.append(f"<h3>{e(name)}</h3><img src='{e(fn)}' alt='numerics of {e(name)}'>")
    parts += hardware_section(comp)
    parts.append("<h2>Recipes</h2>")
    for name in comp.recipes:
        spec = comp.runs_of(name)[0].recipe_spec or {}
        parts.append(f"<details><summary><b>{e(name)}</b> — {e(str(spec.get('source', '')))}</summary>"
                     f"<p>{e(str(spec.get('notes', '')))}</p><pre>{e(_spec_text(spec))}</pre></details>")
    parts.append("</body></html>")
    path = os.path.join(out, "report.html")
    io.atomic_write_text(path, "\n".join(parts))
    return path


def _spec_text(spec: dict) -> str:
    return "\n".join(f"{k}: {v}" for k, v in spec.items() if k not in ("source", "notes") and v not in (None, (), []))
