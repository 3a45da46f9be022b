"""``lowp report DIR [DIR...]``: the compare report again from existing ``results.json`` files, without training.

One folder: its report.html and plots are rendered again in place from its results.json (the same results give
the same files). Several folders: their runs are merged (same task, epochs, lr, batch size and metric required;
recipes in order of first appearance, seeds ascending; a (recipe, seed) run found in more than one folder is taken
from the first folder that has it), differences to FP32 are paired again, and results.json plus the report are
written into ``out``.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Sequence

from . import io
from .compare import Comparison, _with_deltas, load_results

MATCH = ("task", "epochs", "lr", "batch_size", "metric_name", "higher_is_better", "metric_unit")


def load_dir(path: str) -> Comparison:
    """The comparison in folder ``path``; a one-line ValueError when it has no (readable) results.json."""
    p = os.path.join(path, "results.json")
    if not os.path.isfile(p):
        raise ValueError(f"{path!r} has no results.json (not a lowp compare output folder)")
    try:
        return load_results(p)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"cannot read {p!r}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                         .rstrip(": ")) from None


def merge(comps: Sequence[Comparison], out: str | None = None) -> Comparison:
    """One comparison holding the runs of all ``comps`` (see the module docstring)."""
    first = comps[0]
    for c in comps[1:]:
        for f in MATCH:
            if getattr(c, f) != getattr(first, f):
                raise ValueError(f"cannot merge: {f} differs ({getattr(first, f)!r} in {first.out!r}, "
                                 f"{getattr(c, f)!r} in {c.out!r})")
    runs: dict[tuple[str, int], object] = {}
    order: list[str] = []
    for c in comps:
        for r in c.runs:
            if r.recipe not in order:
                order.append(r.recipe)
            runs.setdefault((r.recipe, r.seed), r)
    seeds = sorted({s for _, s in runs})
    merged = [runs[(name, s)] for name in order for s in seeds if (name, s) in runs]
    model = next((c.model for c in comps if c.model), None)
    return dataclasses.replace(first, seed=seeds[0], seeds=tuple(seeds), runs=_with_deltas(merged), out=out,
                               reused=(), model=model)


def report(dirs: Sequence[str], out: str | None = None) -> str:
    """Render the report of one folder in place, or of several merged into ``out``; returns report.html's path."""
    from .report import render

    if not dirs:
        raise ValueError("no folder given")
    comps = [load_dir(d) for d in dirs]  # every folder checked before anything is written
    if len(dirs) == 1 and (out is None or os.path.abspath(out) == os.path.abspath(dirs[0])):
        with io.locked_dir(dirs[0], "lowp report"):
            return render(comps[0], dirs[0])
    out = out or "lowp-report"
    if os.path.exists(out) and not os.path.isdir(out):
        raise ValueError(f"output path {out!r} exists and is not a directory")
    os.makedirs(out, exist_ok=True)
    comp = merge(comps, out) if len(comps) > 1 else dataclasses.replace(comps[0], out=out)
    with io.locked_dir(out, "lowp report"):
        io.atomic_write_json(os.path.join(out, "results.json"), comp.to_dict())
        return render(comp, out)
