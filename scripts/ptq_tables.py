"""Accuracy tables of docs/results/ptq.md: runs ``lowp ptq`` for every method on digits-mlp and mnist1d-cnn and
prints markdown tables (also written to OUT/tables.md).

    PYTHONPATH=. python scripts/ptq_tables.py [--out /tmp/ptq_tables] [--seed 0]
"""
from __future__ import annotations

import argparse
import json
import os
import sys

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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="/tmp/ptq_tables")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tasks", nargs="+", default=["digits-mlp", "mnist1d-cnn"])
    args = ap.parse_args()
    torch.set_num_threads(1)
    lines = []
    for task in args.tasks:
        lines.append(f"\n### {task}\n")
        lines.append("| method | configuration | edge layers | accuracy % | Δ vs FP32 | weight bits | size (bytes) "
                     "| mults replaced |")
        lines.append("|---|---|---|---|---|---|---|---|")
        first = True
        for i, (method, opts) in enumerate(RUNS):
            d = os.path.join(args.out, task, f"{i}-{method}")
            os.makedirs(d, exist_ok=True)
            # share the FP32 model between runs: train once into the first directory, copy the file
            fp = os.path.join(args.out, task, f"fp32_{task}.pt")
            if os.path.exists(fp):
                import shutil
                shutil.copy(fp, os.path.join(d, f"fp32_{task}.pt"))
            rc = lowp_main(["ptq", "--task", task, "--method", method, "--out", d, "--seed", str(args.seed), *opts])
            if rc:
                sys.exit(rc)
            if not os.path.exists(fp):
                import shutil
                shutil.copy(os.path.join(d, f"fp32_{task}.pt"), fp)
            res = json.load(open(os.path.join(d, "results.json")))
            if first:
                lines.append(f"| fp32 | - | - | {res['fp32_metric']:.2f} | 0.00 | 32 | {res['fp32_bytes']} | 0% |")
                first = False
            for c in res["configs"]:
                edge = c["options"].get("edge_bits", "-")
                edge = "ternary" if edge is None else (f"int{edge}" if edge != "-" else "-")
                lines.append(f"| {method} | {c['label']} | {edge} | {c['metric']:.2f} | "
                             f"{c['metric'] - c['fp32_metric']:+.2f} | {c['weight_bits']:.2f} | {c['size_bytes']} | "
                             f"{100 * c['mult_fraction_replaced']:.1f}% |")
    text = "\n".join(lines)
    print(text)
    with open(os.path.join(args.out, "tables.md"), "w") as f:
        f.write(text + "\n")


if __name__ == "__main__":
    main()
