"""The paper recipes on the language-model task (docs/results/paper-recipes.md): ``lowp compare --task tiny-gpt``
under fp32, bf16, fp16-amp, fp8-e5m2, fp8-e5m2-noscale, fp8-hybrid, fp8-ibm, int16-dfp, fixed16-sr, mxfp8, mxfp4 over
seeds 0, 1, 2 (initial weights and data order; paired across recipes), per-layer numerics every
``--numerics-every`` steps, then one table (scripts/replication.py): final validation loss mean ± sd over the seeds,
Δ vs FP32 with its paired 95% confidence interval (lowp's aggregate), and each recipe's worst per-layer numerics
(largest flushed-to-zero and saturated fractions, lowest SQNR), which explain the losers; then each source paper's
claim against the result.

    PYTHONPATH=. python scripts/paper_recipes.py [--seeds 0 1 2] [--jobs 2] [--out /work/repl/tiny-gpt]

Writes docs/results/paper-recipes.md and paper-recipes.json (every number). A rerun reuses finished runs
(``lowp compare`` resume), also those of scripts/hardware_recipes.py when both write into the same folder.
"""
from __future__ import annotations

import argparse
import json
import os

import replication

RECIPES = ["fp32", "bf16", "fp16-amp", "fp8-e5m2", "fp8-e5m2-noscale", "fp8-hybrid", "fp8-ibm", "int16-dfp",
           "fixed16-sr", "mxfp8", "mxfp4"]
LOSES = ("fp8-e5m2-noscale", "mxfp4")  # claims that the recipe loses accuracy
CLAIMS = {
    "bf16": ("Kalamkar'19", "BF16 trains as FP32 without hyper-parameter changes"),
    "fp16-amp": ("Micikevicius'18", "FP16 with loss scaling and FP32 master weights matches FP32"),
    "fp8-e5m2": ("Mellempudi'19", "FP8 E5M2 with enhanced loss scaling and stochastic rounding matches FP32"),
    "fp8-e5m2-noscale": ("Mellempudi'19", "without loss scaling FP8 E5M2 loses accuracy (gradient underflow)"),
    "fp8-hybrid": ("Micikevicius'22", "E4M3 forward / E5M2 backward with per-tensor scaling matches 16-bit"),
    "fp8-ibm": ("Wang'18", "FP8 (1,5,2) operands with FP16 (1,6,9) chunked accumulation match FP32"),
    "int16-dfp": ("Das'18", "16-bit dynamic fixed point matches FP32"),
    "fixed16-sr": ("Gupta'15", "16-bit fixed point with stochastic rounding matches float"),
    "mxfp8": ("Rouhani'23", "MXFP8 training matches FP32"),
    "mxfp4": ("Rouhani'23", "MXFP4 forward loses accuracy against MXFP8/FP32 (weights/activations in 4 bits)"),
}

NOTES = [
    "Caveats: one small model, 5 short epochs, 3 seeds: an interval that includes 0 says the difference is below "
    "what three seeds resolve, not that there is none. fp8-e5m2 and fp8-ibm keep their first and last layers in "
    "FP32 (their papers' choice).",
]


def claim_verdict(name: str, row: dict | None, unit: str, margin: float) -> str:
    """Whether a paper's claim holds. A "matches FP32" claim holds when the 95% interval of Δ lies below
    ``margin`` (2% of FP32's loss: the margin the any-model issue sets for bf16); an interval that is not
    distinguishable from 0 but reaches past the margin is inconclusive. A "loses accuracy" claim (no loss scaling,
    MXFP4) holds when the recipe is worse than FP32."""
    if not row or "verdict" not in row:
        return "no result (a run failed or diverged: " + (row or {}).get("status", "not run") + ")"
    v, d = row["verdict"], row["delta"]
    if name in LOSES:
        return "holds (worse than FP32)" if v == "worse" else f"not shown here ({v}: Δ {d['mean']:+.4f} {unit})"
    if v == "worse":
        return f"does not hold here (worse: Δ {d['mean']:+.4f} {unit})"
    if d["hi"] is not None and d["hi"] <= margin:
        return (f"holds (within {margin:.4f} {unit}, 2% of FP32's loss: the interval's upper end is "
                f"{d['hi']:+.4f})")
    return (f"inconclusive (not distinguishable from FP32, but the interval reaches {d['hi']:+.4f} {unit}, past "
            f"the 2% margin of {margin:.4f})")


def loser_lines(summary: dict) -> list[str]:
    """One line per recipe worse than FP32: where its values die or clip (the numerics columns, in words)."""
    out = []
    for name, row in summary.items():
        w = row.get("numerics")
        if row.get("verdict") != "worse" or not w:
            continue
        sat = (f"{100 * w['overflow']:.2f}% of `{w['overflow_at']}` saturated" if w["overflow"] > 0 else
               "nothing saturated")
        out.append(f"- **{name}** (Δ {row['delta']['mean']:+.4f}): {100 * w['underflow']:.1f}% of "
                   f"`{w['underflow_at']}` flushed to zero, {sat}, lowest SQNR {w['sqnr_db']:.1f} dB at "
                   f"`{w['sqnr_at']}`.")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--numerics-every", type=int, default=25)
    ap.add_argument("--out", default="/work/repl/tiny-gpt")
    ap.add_argument("--doc", default="docs/results/paper-recipes.md")
    ap.add_argument("--rerun-stale", action="store_true", help="train again the runs another lowp build made")
    args = ap.parse_args()
    comp, wall = replication.run_compare("tiny-gpt", RECIPES, args.seeds, args.out, args.jobs, args.numerics_every,
                                         args.rerun_stale)
    rows, summary = replication.table(comp, RECIPES, prefix="r-")
    train_s = sum(r.wall_s for r in comp.runs)
    cmd = replication.command_line("paper_recipes.py", {"seeds": args.seeds, "jobs": args.jobs,
                                                        "numerics_every": args.numerics_every})
    margin = 0.02 * summary["fp32"]["mean"]
    claims = [f"- **{name}** ({paper}: {claim}): {claim_verdict(name, summary.get(name), 'nats/token', margin)}."
              for name, (paper, claim) in CLAIMS.items()]
    doc = "\n".join([
        "# The paper recipes on the language-model task",
        "",
        "Task `tiny-gpt` (lowp/experiments/textlm.py: a 2-layer decoder-only transformer, d 64, byte-level, on "
        "`pydoc_data.topics`; 5 epochs of 100 Adam steps; metric validation loss in nats/token, lower is better; "
        "attention through `F.scaled_dot_product_attention`, captured and emulated with each recipe's `attention` "
        "spec). Seeds " + ", ".join(map(str, args.seeds)) + " (initial weights and data order, the same for every "
        "recipe of a seed). Δ is recipe − FP32 per seed (positive = worse); the 95% interval is the paired "
        "Student-t interval over the seeds (lowp/experiments/stats.py); the verdict is worse/better when it excludes "
        "0, noise otherwise. \"GEMM FLOPs emulated\" is `lowp.coverage`'s share of one step's GEMM FLOPs that run "
        "in the recipe's formats. Numerics columns (scripts/replication.py): the worst layer/role, averaged over "
        f"the steps sampled every {args.numerics_every} steps and over the seeds: values flushed to zero, values "
        "saturated, lowest quantization SQNR.",
        "",
        f"Written by `{cmd}`. The {len(comp.runs)} runs took {train_s / 60:.1f} min of training in all "
        f"(sum of the runs' wall times, {args.jobs} at a time on the 2-core CPU); this call took {wall / 60:.1f} min "
        f"({replication.reuse_text(comp)}).",
        "",
        *rows,
        "",
        "## Does each paper's claim hold here?",
        "",
        *claims,
        "",
        "## Where the losers lose (worst per-layer numerics, averaged over sampled steps and seeds)",
        "",
        *(loser_lines(summary) or ["No recipe is worse than FP32."]),
        "",
        *NOTES,
        "",
    ])
    with open(args.doc, "w", encoding="utf-8") as f:
        f.write(doc)
    with open(os.path.splitext(args.doc)[0] + ".json", "w", encoding="utf-8") as f:
        json.dump({"command": cmd, "wall_s": wall, "train_s": train_s, "summary": summary,
                   "runs": [r.to_dict() | {"numerics": None} for r in comp.runs]}, f, indent=1)
    replication.splice_readme("paper_recipes", readme_block(summary, os.path.relpath(args.doc), margin))
    print(doc)


def readme_block(summary: dict, doc: str, margin: float) -> str:
    """The README's paper-recipe table: each recipe, its paper's claim, its tiny-gpt result, a link to its row."""
    rows = ["| recipe | paper: claim | tiny-gpt, 3 seeds: Δ val loss vs FP32 [95% CI] | claim here |",
            "|---|---|---|---|"]
    for name, (paper, claim) in CLAIMS.items():
        row = summary.get(name) or {}
        d = row.get("delta") or {}
        if d.get("lo") is not None:
            res = f"{d['mean']:+.4f} [{d['lo']:+.4f}, {d['hi']:+.4f}] ({row['verdict']})"
        else:
            res = row.get("status", "not run")
        v = claim_verdict(name, row, "nats/token", margin)
        label = ("reproduced" if v.startswith("holds") else "**does not reproduce**" if v.startswith("does not")
                 else v.split(" (")[0])
        link = f"[{label}]({doc}#{replication.anchor(name, 'r-')})"
        if name == "fixed16-sr":
            link += " (mnist1d/digits: [fixed-point.md](docs/results/fixed-point.md))"
        rows.append(f"| `{name}` | {paper}: {claim} | {res} | {link} |")
    return "\n".join(rows)


if __name__ == "__main__":
    main()
