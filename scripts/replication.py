"""Shared by the replication scripts (paper_recipes.py, hardware_recipes.py): run one ``lowp compare`` per task over
several seeds, and turn its aggregate into a Markdown table with the per-layer numerics that explain the losers.

The statistics are lowp's own (``lowp.experiments.aggregate``: mean ± sd over seeds, the paired Student-t 95%
interval of recipe − FP32 per seed); a recipe is "worse"/"better" when that interval excludes 0, "noise" otherwise.
The numerics columns summarise ``RunResult.numerics`` (lowp's NumericsCollector, sampled every N steps): for each
(layer, role) the mean over the sampled steps and seeds of the fraction of values flushed to zero and saturated, and
the lowest quantization SQNR; the table gives the worst (layer, role) of each.
"""
from __future__ import annotations

import math
import time
from typing import Sequence


def run_compare(task: str, recipes: Sequence[str], seeds: Sequence[int], out: str, jobs: int,
                numerics_every: int | None, rerun_stale: bool = False):
    """``lowp.compare`` into ``out`` (resumes finished runs; ``rerun_stale``: trains again those another lowp build
    made), numerics on (every ``numerics_every`` steps, None: the task's default interval); returns (Comparison,
    wall seconds)."""
    from lowp.experiments.compare import compare

    t0 = time.perf_counter()
    comp = compare(task=task, recipes=list(recipes), seeds=list(seeds), out=out, jobs=jobs,
                   numerics_every=numerics_every, quiet=True, progress=False, rerun_stale=rerun_stale)
    return comp, time.perf_counter() - t0


def reuse_text(comp) -> str:
    """How many runs this call reused, and which of them another lowp build made (``--rerun-stale`` retrains
    those)."""
    n, other = len(comp.reused), comp.reused_other_build
    text = f"it reused {n} finished run{'s' if n != 1 else ''}"
    if other:
        which = "all of them were" if len(other) == n else f"{len(other)} of them ({', '.join(other)}) were"
        text += (f"; {which} made by another lowp build or by one that did not record its build, so their bits may "
                 "differ from this build's (`--rerun-stale` trains them again)")
    return text


def worst_numerics(runs) -> dict | None:
    """The worst (layer, role) of a recipe's runs: largest mean flushed-to-zero and saturated fractions, lowest
    SQNR (dB). None when no run recorded numerics."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in runs:
        for rec in r.numerics or ():
            if rec.get("n"):
                groups.setdefault((rec["layer"], rec["role"]), []).append(rec)
    if not groups:
        return None

    def mean(rs, k):
        return sum(float(x[k]) for x in rs) / len(rs)

    def sq(x):
        v = x.get("sqnr_db")
        v = float(v) if v is not None else math.nan
        return math.inf if math.isnan(v) else v  # no signal (all-zero tensor): not a candidate for the lowest

    u = max(groups, key=lambda g: mean(groups[g], "underflow"))
    o = max(groups, key=lambda g: mean(groups[g], "overflow"))
    s = min(groups, key=lambda g: min(sq(x) for x in groups[g]))
    return {"underflow": mean(groups[u], "underflow"), "underflow_at": "/".join(u),
            "overflow": mean(groups[o], "overflow"), "overflow_at": "/".join(o),
            "sqnr_db": min(sq(x) for x in groups[s]), "sqnr_at": "/".join(s)}


def verdict(summary, higher_is_better: bool) -> str:
    """worse / better / noise from the paired interval (— for FP32 itself, ? for fewer than 2 paired seeds)."""
    d = summary.delta
    if summary.recipe == "fp32":
        return "—"
    if d is None or d.significant is None:
        return "?"
    if not d.significant:
        return "noise"
    return "better" if (d.mean > 0) == higher_is_better else "worse"


def anchor(name: str, prefix: str = "") -> str:
    """The HTML id of a recipe's row (README links point at it)."""
    return prefix + "".join(c if c.isalnum() or c == "-" else "-" for c in name)


def table(comp, recipes: Sequence[str], scale: float = 1.0, unit: str = "", digits: int = 4,
          prefix: str = "") -> tuple[list[str], dict]:
    """Markdown rows (one per recipe, in ``recipes`` order; each recipe cell carries an HTML anchor
    ``prefix + name``) and a JSON-able summary per recipe. ``scale`` multiplies metrics and deltas (100 for accuracy
    in points)."""
    by = {s.recipe: s for s in comp.summaries()}
    hib = comp.higher_is_better
    rows = [f"| recipe | {comp.metric_name}{unit}, mean ± sd | Δ vs FP32 (95% CI) | verdict | GEMM FLOPs emulated | "
            "worst flushed to zero | worst saturated | lowest SQNR (dB) |", "|" + "---|" * 8]
    out = {}
    f = f"{{:.{digits}f}}"
    fs = f"{{:+.{digits}f}}"
    for name in recipes:
        s = by.get(name)
        cell = f'<a id="{anchor(name, prefix)}"></a>{name}'
        if s is None:
            rows.append(f"| {cell} | not run | | | | | | |")
            continue
        runs = comp.runs_of(name)
        vals = [None if r.metric is None else r.metric * scale for r in runs]
        if s.metric is None or s.status != "ok":
            rows.append(f"| {cell} | {s.status} ({', '.join('—' if v is None else f.format(v) for v in vals)}) "
                        "| | | | | | |")
            out[name] = {"status": s.status, "vals": vals, "errors": list(s.errors)}
            continue
        sd = "" if s.metric_sd is None else " ± " + f.format(s.metric_sd * scale)
        d = s.delta
        if name == "fp32" or d is None or d.mean is None:
            ci = "0" if name == "fp32" else "—"
        elif d.lo is None:
            ci = fs.format(d.mean * scale)
        else:
            ci = f"{fs.format(d.mean * scale)} [{fs.format(d.lo * scale)}, {fs.format(d.hi * scale)}]"
        em = "—" if s.gemm_emulated is None else f"{100 * s.gemm_emulated:.0f}%"
        w = worst_numerics(runs)
        if w:
            num = (f"{100 * w['underflow']:.1f}% ({w['underflow_at']}) | {100 * w['overflow']:.2f}% "
                   f"({w['overflow_at']}) | {w['sqnr_db']:.1f} ({w['sqnr_at']})")
        else:
            num = "— | — | —"
        v = verdict(s, hib)
        rows.append(f"| {cell} | {f.format(s.metric * scale)}{sd} | {ci} | {v} | {em} | {num} |")
        out[name] = {"vals": vals, "mean": s.metric * scale,
                     "sd": None if s.metric_sd is None else s.metric_sd * scale,
                     "delta": None if d is None else d.to_dict(), "verdict": v, "gemm_emulated": s.gemm_emulated,
                     "numerics": w, "step_ratio": s.step_ratio}
    return rows, out


def command_line(script: str, args: dict) -> str:
    """The command that rewrites a doc, from the parsed arguments."""
    parts = [f"PYTHONPATH=. python scripts/{script}"]
    for k, v in args.items():
        if k in ("doc",):
            continue
        flag = "--" + k.replace("_", "-")
        parts.append(f"{flag} {' '.join(map(str, v))}" if isinstance(v, (list, tuple)) else f"{flag} {v}")
    return " ".join(parts)


def splice_readme(tag: str, block: str, path: str = "README.md") -> None:
    """Replace the README block between ``<!-- tag:begin -->`` and ``<!-- tag:end -->`` with ``block``."""
    import re

    begin, end = f"<!-- {tag}:begin -->", f"<!-- {tag}:end -->"
    with open(path, encoding="utf-8") as f:
        text = f.read()
    pat = re.compile(re.escape(begin) + ".*?" + re.escape(end), flags=re.S)
    if not pat.search(text):
        raise SystemExit(f"{path} has no {begin} ... {end} block")
    with open(path, "w", encoding="utf-8") as f:
        f.write(pat.sub(lambda _: f"{begin}\n{block}\n{end}", text))


def paired(comp, a: str, b: str):
    """The paired interval of metric(a) − metric(b) over the seeds where both finished (lowp's stats), or None."""
    from lowp.experiments.stats import paired_interval

    ra = {r.seed: r.metric for r in comp.runs_of(a) if r.status == "ok" and r.metric is not None}
    rb = {r.seed: r.metric for r in comp.runs_of(b) if r.status == "ok" and r.metric is not None}
    common = sorted(set(ra) & set(rb))
    return paired_interval([ra[s] - rb[s] for s in common]) if common else None


def compare_text(comp, a: str, b: str, scale: float = 1.0, unit: str = "") -> str:
    """"a − b = d [lo, hi] unit (worse/better/noise for a)" for a claim line."""
    p = paired(comp, a, b)
    if p is None or p.mean is None:
        return f"{a} − {b}: no paired result"
    if p.lo is None:
        return f"{a} − {b} = {p.mean * scale:+.4f}{unit} (one seed, no interval)"
    worse = (p.mean > 0) != comp.higher_is_better
    word = "noise" if not p.significant else ("worse" if worse else "better")
    return (f"{a} − {b} = {p.mean * scale:+.4f} [{p.lo * scale:+.4f}, {p.hi * scale:+.4f}]{unit}: {a} {word}"
            + ("" if word == "noise" else f" than {b}"))
