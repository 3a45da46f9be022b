"""Today's accelerator recipes in miniature (docs/results/hardware-recipes.md): ``lowp compare`` on the
language-model task (tiny-gpt) and mnist1d-cnn under fp32, bf16, fp8-current, fp8-rowwise, fp8-blockwise, mxfp8,
mxfp4, nvfp4 and the NVFP4 ablations nvfp4+no-rht / +no-sr / +no-2d, seeds 0, 1, 2 (initial weights and data order,
paired across recipes); one table per task (scripts/replication.py: mean ± sd, Δ vs FP32 with its paired 95%
interval, per-layer numerics) and the published claims checked with paired intervals between recipes:
MXFP8 and blockwise FP8 ≈ BF16; NVFP4 needs RHT + SR + 2-D weights to stay close; MXFP4 below NVFP4.

    PYTHONPATH=. python scripts/hardware_recipes.py [--seeds 0 1 2] [--jobs 2] [--out /work/repl]

Writes docs/results/hardware-recipes.md and hardware-recipes.json. Reruns reuse finished runs (``lowp compare``
resume), also the tiny-gpt runs of scripts/paper_recipes.py when both write into the same folder.
"""
from __future__ import annotations

import argparse
import json
import os

import replication

RECIPES = ["fp32", "bf16", "fp8-current", "fp8-rowwise", "fp8-blockwise", "mxfp8", "mxfp4", "nvfp4",
           "nvfp4+no-rht", "nvfp4+no-sr", "nvfp4+no-2d"]
TASKS = {  # task: (numerics interval (None: the task's default), metric scale, unit, digits)
    "tiny-gpt": (25, 1.0, " (nats/token, lower is better)", 4),
    "mnist1d-cnn": (None, 100.0, " (%, higher is better)", 2),
}
# (claim, [(a, b), ...] pairs whose paired difference tests it)
CLAIMS = [
    ("MXFP8 ≈ BF16 (Rouhani et al. 2023; NVIDIA's MXFP8 recipe)", [("mxfp8", "bf16")]),
    ("blockwise FP8 ≈ BF16 (DeepSeek-V3 1×128 / 128×128)", [("fp8-blockwise", "bf16")]),
    ("NVFP4 needs RHT, SR and 2-D weight scaling to stay close (NVIDIA 2025, Pretraining LLMs with NVFP4)",
     [("nvfp4", "bf16"), ("nvfp4+no-rht", "nvfp4"), ("nvfp4+no-sr", "nvfp4"), ("nvfp4+no-2d", "nvfp4")]),
    ("MXFP4 is below NVFP4 (NVIDIA 2025)", [("mxfp4", "nvfp4")]),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--out", default="/work/repl", help="parent folder: one compare folder per task")
    ap.add_argument("--doc", default="docs/results/hardware-recipes.md")
    args = ap.parse_args()
    cmd = replication.command_line("hardware_recipes.py", {"seeds": args.seeds, "jobs": args.jobs})
    parts, dump = [], {"command": cmd, "tasks": {}}
    for task, (every, scale, unit, digits) in TASKS.items():
        comp, wall = replication.run_compare(task, RECIPES, args.seeds, os.path.join(args.out, task), args.jobs, every)
        rows, summary = replication.table(comp, RECIPES, scale=scale, unit=unit, digits=digits)
        train_s = sum(r.wall_s for r in comp.runs)
        claims = []
        for claim, pairs in CLAIMS:
            claims.append(f"- {claim}: " + "; ".join(replication.compare_text(comp, a, b, scale)
                                                     for a, b in pairs) + ".")
        parts += [f"## {task}", "",
                  f"{len(comp.runs)} runs, {train_s / 60:.1f} min of training in all (sum of the runs' wall times, "
                  f"{args.jobs} at a time); this call {wall / 60:.1f} min (it reuses finished runs).", "",
                  *rows, "", "Claims (paired differences over the seeds, 95% interval; for a loss, positive = "
                  "worse; for accuracy, negative = worse):", "", *claims, ""]
        dump["tasks"][task] = {"wall_s": wall, "train_s": train_s, "summary": summary}
    doc = "\n".join([
        "# Accelerator recipes in miniature",
        "",
        "Each recipe emulated bit-exactly on the CPU (SPEC §11 definitions; `lowp recipes` lists the sources): "
        "FP8 with per-tensor current scaling (`fp8-current`, TE Float8CurrentScaling), per-row power-of-two scales "
        "(`fp8-rowwise`, torchao), 1×128 activation / 128×128 weight blocks (`fp8-blockwise`), MXFP8/MXFP4 with "
        "every operand blocked along its GEMM's reduction dimension, NVFP4 (E2M1 in blocks of 16, E4M3 block "
        "scales, FP32 tensor scale, 16×16 weight tiles, random Hadamard transform on the wgrad operands, "
        "stochastic rounding of gradients) and its three ablations. Seeds " + ", ".join(map(str, args.seeds)) +
        "; verdict worse/better when the paired 95% interval of Δ vs FP32 excludes 0, noise otherwise.",
        "",
        f"Written by `{cmd}`.",
        "",
        *parts,
        "Caveats: small models, short runs, 3 seeds: \"noise\" means the difference is below what three seeds "
        "resolve, not that there is none. The hardware's own GEMMs and accumulators are not modelled here (FP32 "
        "accumulation; see tensor-core-accumulation.md for that model).",
        "",
    ])
    with open(args.doc, "w", encoding="utf-8") as f:
        f.write(doc)
    with open(os.path.splitext(args.doc)[0] + ".json", "w", encoding="utf-8") as f:
        json.dump(dump, f, indent=1)
    print(doc)


if __name__ == "__main__":
    main()
