"""The compare report: a terminal table, PNG plots and one offline HTML page (``report.html``) referencing them.

Plots (matplotlib, Agg canvas, no global state touched): ``loss.png`` (training loss per epoch, all recipes on
shared axes, log scale), ``metric.png`` (test metric per epoch), ``final.png`` (final metric per recipe, FP32 as a
dashed line; diverged runs hatched) and, per recipe with numerics records, ``numerics-<recipe>.png``.

NUMERICS EXTENSION POINT: ``render(comparison, out, numerics=...)`` takes per-layer, per-role statistics records
``{"layer", "role", "step", "underflow", "overflow", "subnormal", "sqnr_db", "amax"}`` (fractions in [0, 1], SQNR in
dB; extra keys ignored), either as ``{recipe: [records]}``, or as one list whose records carry a ``"recipe"`` key;
records stored in a run (``RunResult.numerics``, filled by the analysis layer's collector) are used when
``numerics`` is None. For each recipe it draws heat maps of underflow and overflow (layer × role, mean over the
sampled steps), the SQNR per layer and role, and the underflow of each role over training.
"""
from __future__ import annotations

import html
import io as _io
import math
import os
from collections import defaultdict
from typing import Any, Iterable, Mapping, Sequence

from . import io

COLUMNS = ("recipe", "metric", "delta_fp32", "status", "skipped", "epochs", "wall_s")
HEADERS = {"recipe": "recipe", "metric": "{metric} %", "delta_fp32": "Δ fp32 (pts)", "delta_rel": "Δ fp32 %",
           "status": "status",
           "skipped": "skipped steps", "epochs": "epochs run", "wall_s": "time s", "sparsity": "sparsity %",
           "flops": "train/infer FLOPs vs dense", "comm": "comm bytes/step (×)",
           "gemm": "GEMM FLOPs emulated %"}
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


def _reference(comp):
    return next((r for r in comp.runs if r.recipe == "fp32" and r.metric is not None), None)


def relative_delta(comp, r) -> float | None:
    """``(metric − metric(fp32)) / |metric(fp32)|`` (None without both, or when FP32's metric is 0)."""
    ref = _reference(comp)
    if ref is None or r.metric is None or ref.metric == 0:
        return None
    return (r.metric - ref.metric) / abs(ref.metric)


def _higher(comp) -> bool:
    return getattr(comp, "higher_is_better", True)


def ranked(comp) -> list:
    """The runs best first: finished runs by their final metric in the metric's direction (highest first, or
    lowest first when lower is better), then diverged runs the same way, then runs without a metric; ties keep
    the table's order."""
    sign = -1.0 if _higher(comp) else 1.0
    rank = {"ok": 0, "diverged": 1, "error": 2}
    return sorted(comp.runs, key=lambda r: (r.metric is None, rank[r.status],
                                            0.0 if r.metric is None else sign * r.metric))


def summary_lines(comp, tol: float | None = None) -> list[str]:
    """Plain-language verdicts: the ranking (best first), then, against FP32, which finished recipes are within
    ``tol`` (default 1 percentage point for a fraction metric, else 1% of FP32's value), better, or worse, in the
    metric's direction (diverged and failed runs are left out of those)."""
    lines = [f"ranking, best first ({'higher' if _higher(comp) else 'lower'} {comp.metric_name} is better): "
             + ", ".join(r.recipe + (" (diverged)" if r.diverged else "") for r in ranked(comp)
                         if r.metric is not None)]
    ref = _reference(comp)
    if ref is None:
        return lines
    frac = _fraction(comp)
    tol = 0.01 if tol is None else tol
    within, better, worse = [], [], []
    for r in comp.runs:
        if r is ref or r.metric is None or r.status != "ok":
            continue
        d = r.metric - ref.metric
        size = abs(d) if frac else abs(d) / abs(ref.metric) if ref.metric else math.inf
        gain = d > 0 if _higher(comp) else d < 0
        amount = f"{100 * size:.2f}{' points' if frac else '%'}"
        if size <= tol:
            within.append(f"{r.recipe} ({amount} {'better' if gain else 'worse'})" if d else f"{r.recipe} (equal)")
        else:
            (better if gain else worse).append(f"{r.recipe} ({amount})")
    what = f"{100 * tol:g} {'point' if 100 * tol == 1 else 'points'}" if frac else f"{100 * tol:g}%"
    if within:
        lines.append(f"within {what} of fp32: " + ", ".join(within))
    if better:
        lines.append(f"better than fp32 by more than {what}: " + ", ".join(better))
    if worse:
        lines.append(f"worse than fp32 by more than {what}: " + ", ".join(worse))
    return lines


def format_summary(comp) -> str:
    """:func:`summary_lines` as text."""
    return "\n".join(summary_lines(comp))


def table_rows(comp) -> list[dict[str, str]]:
    """One dict of display strings per recipe (the same cells in the terminal table and the HTML table): a
    fraction metric and its delta in percent / percentage points with 2 decimals, another metric and its delta
    with 4 decimals plus the delta in percent of FP32's value; time in seconds with 1 decimal."""
    rows = []
    unit = getattr(comp, "metric_unit", "fraction")
    for r in comp.runs:
        rel = relative_delta(comp, r)
        rows.append({"recipe": r.recipe, "metric": _pct(r.metric, unit), "delta_fp32": _delta(r.fp32_delta, unit),
                     "delta_rel": "-" if rel is None else f"{100 * rel:+.2f}",
                     "status": r.status, "skipped": str(r.skipped_steps), "epochs": str(len(r.history)),
                     "wall_s": f"{r.wall_s:.1f}",
                     "sparsity": "-" if r.sparsity is None else f"{100 * r.sparsity:.1f}",
                     "flops": "-" if r.train_flops_ratio is None else
                     f"{r.train_flops_ratio:.2f} / {r.inference_flops_ratio:.2f}",
                     "comm": "-" if r.bytes_per_step is None else
                     f"{r.bytes_per_step:.0f} ({r.compression_ratio:.1f}×)",
                     "gemm": "-" if r.gemm_emulated is None else f"{100 * r.gemm_emulated:.1f}"})
    return rows


def columns(comp) -> tuple[str, ...]:
    """The table's columns: the fixed ones, plus sparsity/FLOPs and communication when some run has them."""
    cols = COLUMNS
    if not _fraction(comp):
        cols = cols[:3] + ("delta_rel",) + cols[3:]
    if any(r.gemm_emulated is not None for r in comp.runs):
        cols += ("gemm",)
    if any(r.sparsity is not None for r in comp.runs):
        cols += ("sparsity", "flops")
    if any(r.bytes_per_step is not None for r in comp.runs):
        cols += ("comm",)
    return cols


def _headers(comp) -> list[str]:
    heads = dict(HEADERS)
    arrow = "" if _higher(comp) else " ↓"  # lower is better
    if _fraction(comp):
        heads.update(metric=heads["metric"] + arrow)
    else:
        heads.update(metric=f"{{metric}} ({comp.metric_unit}){arrow}", delta_fp32=f"Δ fp32 ({comp.metric_unit})")
    return [heads[c].format(metric=comp.metric_name) for c in columns(comp)]


def format_table(comp) -> str:
    """The summary table as aligned text."""
    head = _headers(comp)
    cells = [[row[c] for c in columns(comp)] for row in table_rows(comp)]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(head)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(c, widths)).rstrip() for c in cells]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------- plots

def _figure(w: float = 6.4, h: float = 4.0):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: str) -> None:
    buf = _io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    io.atomic_write_bytes(path, buf.getvalue())


def _curve(comp, key: str, ylabel: str, path: str, log: bool = False) -> None:
    fig = _figure()
    ax = fig.add_subplot()
    for r in comp.runs:
        pts = [(h["epoch"], h[key]) for h in r.history if h.get(key) is not None]
        if key == "test_metric" and _fraction(comp):
            pts = [(e, 100 * v) for e, v in pts]
        if log:
            pts = [(e, v) for e, v in pts if v > 0]
        if not pts:
            continue
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=3,
                ls="--" if r.diverged else "-", label=r.recipe + (" (diverged)" if r.diverged else ""))
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    ax.set_title(f"{comp.task}: {ylabel}")
    _save(fig, path)


def _bars(comp, path: str) -> None:
    """The final metric per recipe, best first (:func:`ranked`), FP32 as a dashed line."""
    fig = _figure()
    ax = fig.add_subplot()
    runs = ranked(comp)
    frac = _fraction(comp)
    scale = 100.0 if frac else 1.0
    names = [r.recipe for r in runs]
    vals = [0.0 if r.metric is None else scale * r.metric for r in runs]
    bars = ax.bar(range(len(names)), vals, color=["tab:red" if r.status != "ok" else "tab:blue" for r in runs])
    for b, r in zip(bars, runs):
        if r.status != "ok":
            b.set_hatch("//")
    ref = _reference(comp)
    if ref is not None:
        ax.axhline(scale * ref.metric, color="k", ls="--", lw=1,
                   label=f"fp32 {metric_text(ref.metric, comp.metric_unit)}")
        ax.legend(fontsize=8)
    for i, v in enumerate(vals):
        ax.text(i, v, f"{v:.1f}" if frac else f"{v:.3f}", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(f"final {comp.metric_name} ({'%' if frac else comp.metric_unit})")
    better = "higher" if _higher(comp) else "lower"
    ax.set_title(f"{comp.task}: final {comp.metric_name}, best first ({better} is better; red: diverged / error)",
                 fontsize=9)
    _save(fig, path)


# ------------------------------------------------------------------------------------ numerics section

def group_numerics(numerics: Any, comp=None) -> dict[str, list[dict]]:
    """Normalise numerics input to ``{recipe: [records]}`` (see module docstring)."""
    if numerics is None:
        if comp is None:
            return {}
        return {r.recipe: list(r.numerics) for r in comp.runs if r.numerics}
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
    fig = _figure(13, 3.2 + 0.25 * len(layers))
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
    _save(fig, path)


# ------------------------------------------------------------------------------------------------ HTML

_CSS = """body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}
td:first-child,th:first-child{text-align:left}tr.bad td{background:#fde8e8}img{max-width:100%}
code{background:#f4f4f4;padding:0 3px}details{margin:.3em 0}"""


def _html_table(comp) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in _headers(comp))
    body = []
    for row in table_rows(comp):
        cls = ' class="bad"' if row["status"] != "ok" else ""
        body.append(f"<tr{cls}>" + "".join(f"<td>{html.escape(row[c])}</td>" for c in columns(comp)) + "</tr>")
    return f'<table id="summary"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def _per_layer_series(comp, key: str) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """recipe -> layer -> [(epoch, value)] for a per-layer dict stored in the history under ``key``
    (``pact_alpha``: PACT's clipping level; ``layer_sparsity``: AutoSparse's fraction of zero weights)."""
    out: dict[str, dict[str, list[tuple[int, float]]]] = {}
    for r in comp.runs:
        for h in r.history:
            for layer, v in (h.get(key) or {}).items():
                if v is not None:
                    out.setdefault(r.recipe, {}).setdefault(layer, []).append((h["epoch"], float(v)))
    return out


def _layer_plot(series: dict[str, dict[str, list[tuple[int, float]]]], ylabel: str, path: str,
                scale: float = 1.0) -> None:
    """One panel per recipe, one line per layer, value against epoch."""
    fig = _figure(4.2 * len(series), 3.4)
    for i, (recipe, layers) in enumerate(series.items()):
        ax = fig.add_subplot(1, len(series), i + 1)
        for layer, pts in layers.items():
            ax.plot([p[0] for p in pts], [scale * p[1] for p in pts], marker="o", ms=3, label=layer)
        ax.set_title(recipe, fontsize=9)
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, title="layer", title_fontsize=7)
    _save(fig, path)


def _technique_sections(comp, out: str) -> list[str]:
    """Report sections for techniques that log per-layer values each epoch: PACT alpha, AutoSparse sparsity."""
    parts = []
    alpha = _per_layer_series(comp, "pact_alpha")
    if alpha:
        _layer_plot(alpha, "PACT clipping level α", os.path.join(out, "pact-alpha.png"))
        parts += ["<h2>PACT clipping levels</h2><p>α per layer at the end of each epoch (mean over channels for "
                  "per-channel α).</p>", "<img src='pact-alpha.png' alt='PACT alpha per layer over training'>"]
    sparsity = _per_layer_series(comp, "layer_sparsity")
    if sparsity:
        _layer_plot(sparsity, "zero weights (%)", os.path.join(out, "sparsity.png"), scale=100.0)
        parts += ["<h2>Sparsity</h2><p>Fraction of zero weights per layer at the end of each epoch; the table "
                  "gives the final overall sparsity and the training / inference FLOPs against dense.</p>",
                  "<img src='sparsity.png' alt='sparsity per layer over training'>"]
    return parts


def render(comp, out: str, numerics: Any = None) -> str:
    """Write the plots and ``report.html`` for ``comp`` into ``out``; returns the HTML path."""
    os.makedirs(out, exist_ok=True)
    _curve(comp, "train_loss", "training loss", os.path.join(out, "loss.png"), log=True)
    unit = "%" if _fraction(comp) else comp.metric_unit
    better = "" if _higher(comp) else ", lower is better"
    _curve(comp, "test_metric", f"test {comp.metric_name} ({unit}{better})", os.path.join(out, "metric.png"))
    _bars(comp, os.path.join(out, "final.png"))
    e = html.escape
    if _fraction(comp):
        how = f"test {e(comp.metric_name)} ({'higher' if _higher(comp) else 'lower'} is better); Δ fp32 in " \
              "percentage points"
    else:
        how = (f"test {e(comp.metric_name)} in {e(comp.metric_unit)} ({'higher' if _higher(comp) else 'lower'} "
               f"is better); Δ fp32 = metric − FP32's, in {e(comp.metric_unit)} and in percent of FP32's")
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>lowp compare: {e(comp.task)}</title>"
             f"<style>{_CSS}</style></head><body>",
             f"<h1>lowp compare: {e(comp.task)}</h1>",
             f"<p>{len(comp.runs)} recipes, {comp.epochs} epochs, seed {comp.seed}, lr {comp.lr:g}, batch size "
             f"{comp.batch_size}; identical initial weights and data order for every recipe. Metric: "
             f"{how}. Raw numbers: <a href='results.json'>"
             f"results.json</a>; repeat with <code>lowp compare --config config.toml</code>.</p>",
             "<h2>Summary</h2>", _html_table(comp),
             "<ul id='verdict'>" + "".join(f"<li>{e(x)}</li>" for x in summary_lines(comp)) + "</ul>"]
    for r in comp.runs:
        if r.error:
            parts.append(f"<p><b>{e(r.recipe)}</b> failed: <code>{e(r.error)}</code></p>")
        elif r.diverged:
            parts.append(f"<p><b>{e(r.recipe)}</b> diverged (non-finite loss) at {e(str(r.diverged_at))}.</p>")
    parts += ["<h2>Training</h2>", "<img src='loss.png' alt='training loss per epoch'>",
              "<img src='metric.png' alt='test metric per epoch'>",
              "<h2>Final metric against FP32</h2>", "<img src='final.png' alt='final metric per recipe'>"]
    parts += _technique_sections(comp, out)
    groups = group_numerics(numerics, comp)
    if groups:  # the numerics section (see module docstring)
        parts.append("<h2>Numerics per layer and role</h2><p>Underflow: fraction of nonzero values flushed to 0; "
                     "overflow: fraction saturated or overflowed; SQNR of the quantized tensor against its "
                     "unquantized value. Means over the sampled steps.</p>")
        for name, recs in groups.items():
            fn = f"numerics-{io.safe_filename(name)}.png"
            render_numerics(name, recs, os.path.join(out, fn))
            parts.append(f"<h3>{e(name)}</h3><img src='{e(fn)}' alt='numerics of {e(name)}'>")
    parts.append("<h2>Recipes</h2>")
    for r in comp.runs:
        spec = r.recipe_spec or {}
        parts.append(f"<details><summary><b>{e(r.recipe)}</b> — {e(str(spec.get('source', '')))}</summary>"
                     f"<p>{e(str(spec.get('notes', '')))}</p><pre>{e(_spec_text(spec))}</pre></details>")
    parts.append("</body></html>")
    path = os.path.join(out, "report.html")
    io.atomic_write_text(path, "\n".join(parts))
    return path


def _spec_text(spec: dict) -> str:
    return "\n".join(f"{k}: {v}" for k, v in spec.items() if k not in ("source", "notes") and v not in (None, (), []))
