"""Accuracy tables of docs/results/ptq.md: runs ``lowp ptq`` for every method on digits-mlp and mnist1d-cnn, for
several seeds (each seed trains its own FP32 model, ``lowp ptq --seed``), and prints markdown tables with the mean ±
sample standard deviation over the seeds and the per-seed values (also written to OUT/tables.md), the two orderings
of issue 6 (smaller FGQ group N is more accurate; more residual terms are more accurate) on the means and per seed,
with the label-free closeness to the FP32 model (top-1 agreement, relative output error ||out − out_fp32||² /
||out_fp32||²) beside the accuracy, and a JSON of every number (``--json``, default OUT/ptq.json). Single-threaded.

    PYTHONPATH=. python scripts/ptq_tables.py [--seeds 0 1 2] [--out /tmp/ptq_tables] [--json docs/results/ptq.json]

Accuracies in the JSON are fractions (as in ``lowp ptq``/``lowp compare`` results.json); tables show percent.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time

import torch

from lowp.cli import main as lowp_main

RUNS = [
    ("int8", ["--calibration", "minmax", "percentile", "entropy", "--granularity", "channel", "tensor"]),
    ("int8", ["--calibration", "minmax", "entropy", "--asymmetric", "1"]),
    ("fgq", ["--group", "4", "8", "16", "32", "64", "--act-bits", "8", "4", "--edge-bits", "0"]),
    ("fgq", ["--group", "4", "64", "--act-bits", "8", "--edge-bits", "8"]),
    ("cluster", ["--cluster", "1", "4", "16", "--kind", "ternary", "int4", "--edge-bits", "0"]),
    ("ternary-residual", ["--terms", "1", "2", "3", "4", "--group", "64", "--edge-bits", "0"]),
    ("ternary-residual", ["--terms", "1", "2", "3", "4", "--group", "4", "--edge-bits", "0"]),
]
GROUPS = (4, 8, 16, 32, 64)
TERMS = (1, 2, 3, 4)


def _edge(c: dict) -> str:
    if c["method"] == "int8":
        return "-"
    e = c["options"].get("edge_bits")
    return "ternary" if e is None else f"int{e}"


def _ms(v: list[float]) -> tuple[float, float]:
    return statistics.fmean(v), (statistics.stdev(v) if len(v) > 1 else 0.0)


def run_all(tasks: list[str], seeds: list[int], out: str) -> dict:
    """Run every (task, seed, method) and collect the results.json of each run."""
    data = {}
    for task in tasks:
        per_seed = {}
        for seed in seeds:
            base = os.path.join(out, task, f"seed{seed}")
            fp = os.path.join(base, f"fp32_{task}.pt")
            if os.path.exists(fp):
                os.remove(fp)  # train afresh in every invocation (a model left by an older version would be stale)
            runs = []
            for i, (method, opts) in enumerate(RUNS):
                d = os.path.join(base, f"{i}-{method}")
                os.makedirs(d, exist_ok=True)
                # one FP32 model per (task, seed): trained by the first run, copied into the others' directories
                cached = os.path.join(d, f"fp32_{task}.pt")
                if os.path.exists(fp):
                    shutil.copy(fp, cached)
                elif os.path.exists(cached):
                    os.remove(cached)
                rc = lowp_main(["ptq", "--task", task, "--method", method, "--out", d, "--seed", str(seed), *opts])
                if rc:
                    sys.exit(rc)
                if not os.path.exists(fp):
                    shutil.copy(os.path.join(d, f"fp32_{task}.pt"), fp)
                with open(os.path.join(d, "results.json")) as f:
                    runs.append(json.load(f))
            per_seed[seed] = runs
        data[task] = per_seed
    return data


def summarize(data: dict, seeds: list[int]) -> dict:
    """Per task: fp32 and one row per configuration with the per-seed accuracies (fractions), mean and std."""
    summary = {}
    for task, per_seed in data.items():
        fp32 = [per_seed[s][0]["fp32_metric"] for s in seeds]
        rows, index = [], {}
        for s in seeds:
            for res in per_seed[s]:
                for c in res["configs"]:
                    key = (c["method"], c["label"], _edge(c))
                    if key not in index:
                        index[key] = len(rows)
                        rows.append({"method": c["method"], "label": c["label"], "edge": _edge(c),
                                     "options": c["options"], "weight_bits": c["weight_bits"],
                                     "size_bytes": c["size_bytes"],
                                     "mult_fraction_replaced": c["mult_fraction_replaced"],
                                     "metric": [], "fp32_delta": [], "fp32_agreement": [],
                                     "output_rel_error": []})
                    r = rows[index[key]]
                    r["metric"].append(c["metric"])
                    r["fp32_delta"].append(c["metric"] - c["fp32_metric"])
                    r["fp32_agreement"].append(c["fp32_agreement"])
                    r["output_rel_error"].append(c["output_rel_error"])
        for r in rows:
            for k in ("metric", "fp32_delta", "fp32_agreement", "output_rel_error"):
                r[f"{k}_mean"], r[f"{k}_std"] = _ms(r[k])
        m, sd = _ms(fp32)
        summary[task] = {"fp32_metric": fp32, "fp32_metric_mean": m, "fp32_metric_std": sd,
                         "fp32_bytes": per_seed[seeds[0]][0]["fp32_bytes"], "configs": rows}
    return summary


def _find(rows: list[dict], method: str, label: str, edge: str = "ternary") -> dict:
    return next(r for r in rows if r["method"] == method and r["label"] == label and r["edge"] == edge)


def orderings(summary: dict, seeds: list[int]) -> dict:
    """The two orderings of issue 6 on the means and per seed: accuracy non-increasing in N (FGQ, every layer
    ternary) and non-decreasing in r (ternary residual, N = 64 and N = 4)."""
    out = {}
    for task, s in summary.items():
        rows = s["configs"]
        chains = {f"fgq N={'/'.join(map(str, GROUPS))} a{a}": [_find(rows, "fgq", f"N={n} a{a}") for n in GROUPS]
                  for a in (8, 4)}
        for n in (64, 4):
            chains[f"residual r={'/'.join(map(str, TERMS))} N={n}"] = [
                _find(rows, "ternary-residual", f"r={r} N={n} a8") for r in TERMS]
        res = {}
        for name, chain in chains.items():
            sign = 1 if name.startswith("fgq") else -1  # fgq: should decrease along the chain; residual: increase
            means = [r["metric_mean"] for r in chain]
            breaks = [i for i in range(len(chain) - 1) if sign * (means[i + 1] - means[i]) > 1e-12]
            per_seed = []
            for j, seed in enumerate(seeds):
                v = [r["metric"][j] for r in chain]
                per_seed.append({"seed": seed, "values": v,
                                 "breaks": [i for i in range(len(v) - 1) if sign * (v[i + 1] - v[i]) > 1e-12]})
            errs = [r["output_rel_error_mean"] for r in chain]
            res[name] = {"labels": [r["label"] for r in chain], "means": means,
                         "stds": [r["metric_std"] for r in chain], "holds_on_means": not breaks,
                         "output_rel_error_means": errs,
                         # the expected direction: the error grows with N (fgq) and shrinks with r (residual)
                         "output_error_monotone": all(sign * (a - b) <= 0 for a, b in zip(errs, errs[1:])),
                         "fp32_agreement_means": [r["fp32_agreement_mean"] for r in chain],
                         "breaks_on_means": [f"{chain[i]['label']} -> {chain[i + 1]['label']}" for i in breaks],
                         "per_seed": per_seed}
        out[task] = res
    return out


def tables(summary: dict, order: dict, seeds: list[int]) -> str:
    pct = lambda v: f"{100 * v:.2f}"  # noqa: E731
    lines = []
    for task, s in summary.items():
        lines.append(f"\n### {task}\n")
        lines.append(f"Mean ± sample std over seeds {', '.join(map(str, seeds))}; accuracy in %, Δ in points.\n")
        lines.append("| method | configuration | edge layers | accuracy % | Δ vs FP32 | per seed | agrees with FP32 % "
                     "| output error | weight bits | size (bytes) | mults replaced |")
        lines.append("|---|---|---|---|---|---|---|---|---|---|---|")
        lines.append(f"| fp32 | - | - | {pct(s['fp32_metric_mean'])} ± {pct(s['fp32_metric_std'])} | 0.00 | "
                     f"{' / '.join(pct(v) for v in s['fp32_metric'])} | 100 | 0 | 32 | {s['fp32_bytes']} | 0% |")
        for r in s["configs"]:
            lines.append(f"| {r['method']} | {r['label']} | {r['edge']} | {pct(r['metric_mean'])} ± "
                         f"{pct(r['metric_std'])} | {100 * r['fp32_delta_mean']:+.2f} | "
                         f"{' / '.join(pct(v) for v in r['metric'])} | {pct(r['fp32_agreement_mean'])} | "
                         f"{r['output_rel_error_mean']:.1e} | {r['weight_bits']:.2f} | {r['size_bytes']} | "
                         f"{100 * r['mult_fraction_replaced']:.1f}% |")
        lines.append(f"\nOrderings ({task}, mean accuracy %, every layer ternary):\n")
        for name, o in order[task].items():
            chain = " → ".join(f"{100 * m:.2f}±{100 * sd:.2f}" for m, sd in zip(o["means"], o["stds"]))
            status = "holds" if o["holds_on_means"] else "breaks at " + ", ".join(o["breaks_on_means"])
            nb = sum(1 for p in o["per_seed"] if p["breaks"])
            err = "monotone" if o["output_error_monotone"] else "NOT monotone"
            lines.append(f"- {name}: {chain} — on the means {status}; seeds with a break: {nb}/{len(seeds)}; "
                         f"output error {' → '.join(f'{e:.1e}' for e in o['output_rel_error_means'])} ({err})")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="/tmp/ptq_tables")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--tasks", nargs="+", default=["digits-mlp", "mnist1d-cnn"])
    ap.add_argument("--json", default=None, help="where to write every number (default OUT/ptq.json)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    t0 = time.time()
    data = run_all(args.tasks, args.seeds, args.out)
    wall = time.time() - t0
    summary = summarize(data, args.seeds)
    order = orderings(summary, args.seeds)
    text = tables(summary, order, args.seeds)
    text += f"\n\nwall time: {wall:.0f} s ({len(args.seeds)} seeds, {len(args.tasks)} tasks, torch threads 1)"
    print(text)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "tables.md"), "w") as f:
        f.write(text + "\n")
    doc = {"command": "PYTHONPATH=. python scripts/ptq_tables.py " + " ".join(sys.argv[1:]),
           "seeds": args.seeds, "tasks": args.tasks, "torch": torch.__version__, "torch_threads": 1, "wall_s": wall,
           "metric": "accuracy as a fraction of the test set (tables show percent); std = sample std over seeds",
           "runs": [{"method": m, "args": o} for m, o in RUNS], "summary": summary, "orderings": order}
    path = args.json or os.path.join(args.out, "ptq.json")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(doc, f, indent=1)
    print(f"json: {path}")


if __name__ == "__main__":
    main()
