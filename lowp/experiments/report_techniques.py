"""The techniques' part of the compare report: summary-table columns and report sections contributed by the
registered techniques of the comparison's recipes (``lowp.recipes.technique``), drawn without naming any.

A technique counts for a comparison when some run's recipe lists it in ``transforms`` and it is registered in this
process (``lowp.recipes.extensions``; the built-in techniques are loaded by name, a user's must be registered before
the report is rendered). Order: registration order. A :class:`~lowp.recipes.technique.LayerPlot` is drawn from the
first seed's run of each recipe: one panel per recipe, one line per layer, the value of the per-layer dict the
history stores under its key against epoch; a section whose plots have no data is left out.
"""
from __future__ import annotations

import html
import os
from .plots import figure, save


def comparison_techniques(comp) -> list:
    """The registered techniques named in the transforms of the comparison's runs, in registration order."""
    from ..recipes.extensions import registered_techniques, split_transform

    used = {split_transform(t)[0] for r in comp.runs for t in ((r.recipe_spec or {}).get("transforms") or ())
            if isinstance(t, str)}
    return [t for t in registered_techniques() if t.name in used]


def technique_columns(comp) -> list:
    """The techniques' summary-table columns (``Column``) that some run has a value for."""
    return [c for t in comparison_techniques(comp) for c in t.columns
            if any(c.cell(r.extras or {}) is not None for r in comp.runs)]


def technique_cells(comp, run) -> dict[str, str]:
    """Column key -> display string of ``run`` for every technique column ('-' where the run has no value)."""
    out = {}
    for t in comparison_techniques(comp):
        for c in t.columns:
            v = c.cell(run.extras or {})
            out[c.key] = "-" if v is None else v
    return out


def per_layer_series(comp, key: str) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """recipe -> layer -> [(epoch, value)] for a per-layer dict stored in the history under ``key`` (first seed's
    runs)."""
    out: dict[str, dict[str, list[tuple[int, float]]]] = {}
    for r in comp.runs:
        if r.seed != comp.seeds[0]:  # the first seed's run
            continue
        for h in r.history:
            for layer, v in (h.get(key) or {}).items():
                if v is not None:
                    out.setdefault(r.recipe, {}).setdefault(layer, []).append((h["epoch"], float(v)))
    return out


def layer_plot(series: dict[str, dict[str, list[tuple[int, float]]]], ylabel: str, path: str,
               scale: float = 1.0) -> None:
    """One panel per recipe, one line per layer, value against epoch."""
    fig = figure(4.2 * len(series), 3.4)
    for i, (recipe, layers) in enumerate(series.items()):
        ax = fig.add_subplot(1, len(series), i + 1)
        for layer, pts in layers.items():
            ax.plot([p[0] for p in pts], [scale * p[1] for p in pts], marker="o", ms=3, label=layer)
        ax.set_title(recipe, fontsize=9)
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, title="layer", title_fontsize=7)
    save(fig, path)


def technique_sections(comp, out: str) -> list[str]:
    """The HTML parts of every technique's report section (its plots written into ``out``)."""
    parts: list[str] = []
    for t in comparison_techniques(comp):
        sec = t.report_section(comp.runs)
        if sec is None:
            continue
        imgs: list[str] = []
        for p in sec.plots:
            series = per_layer_series(comp, p.key)
            if series:
                layer_plot(series, p.ylabel, os.path.join(out, p.filename), scale=p.scale)
                imgs.append(f"<img src='{html.escape(p.filename)}' alt='{html.escape(p.alt)}'>")
        if sec.plots and not imgs:
            continue
        parts += [f"<h2>{html.escape(sec.title)}</h2>{sec.html}", *imgs]
    return parts
