"""Accuracy vs sparsity: AutoSparse with and without gradient annealing vs magnitude pruning (issue 8).

For each target sparsity S in {0.5, 0.7, 0.8, 0.9}, from the same seeds and with the task's optimiser (SGD momentum
0.9, cosine LR) over the same number of epochs, trains

- ``as-ga``    AutoSparse, gradient annealing (α0 = 0.5, cos-sigmoid schedule, α → 0 at the end), target S
- ``as-ga50``  the same with α reaching 0 at half of training (sparse weight gradients afterwards)
- ``as-a0``    the same thresholds and target controller with α = 0 (no annealing)
- ``mag-grad`` gradual global magnitude pruning (Zhu & Gupta cubic, over the first 75% of epochs) to the sparsity
               ``as-ga`` reached (matched)
- ``mag-1shot`` dense for half the epochs, one-shot global magnitude pruning to the same sparsity, fine-tune

and the dense model once; records test accuracy, final sparsity, and the training (whole run, per epoch-end
report) and inference FLOPs ratios against dense (lowp.techniques.flops). Writes the table between the
``autosparse-table`` markers of docs/results/autosparse.md (``--print-only`` to just print).

    PYTHONPATH=. python scripts/autosparse_table.py --task mnist1d-cnn --seeds 2     # a few minutes, 1 thread
    PYTHONPATH=. python scripts/autosparse_table.py --task digits-mlp --seeds 1 --epochs 4 --print-only  # smoke
"""
from __future__ import annotations

import argparse
import json
import math
import pathlib
import re
import statistics
import time

import torch

from lowp.experiments.tasks import get_task
from lowp.techniques import autosparse as A
from lowp.techniques import magnitude_prune as M
from lowp.techniques.flops import cumulative_train_flops_ratio, sparsity_report

DOC = pathlib.Path(__file__).resolve().parents[1] / "docs" / "results" / "autosparse.md"


def run(task, method: str, target: float, seed: int, epochs: int, match: float | None = None) -> dict:
    data = task.load_data()
    torch.manual_seed(seed)
    model = task.build_model()
    gradual = None
    if method.startswith("as-"):
        sched = {"as-ga": A.AlphaSchedule(0.5), "as-ga50": A.AlphaSchedule(0.5, end=0.5),
                 "as-a0": A.AlphaSchedule(0.0)}[method]
        A.apply_autosparse(model, A.AutoSparseConfig(target=target, schedule=sched))
    elif method == "mag-grad":
        gradual = M.GradualPruner(match, end=0.75)
    opt = torch.optim.SGD(model.parameters(), lr=task.lr, momentum=task.momentum, weight_decay=task.weight_decay)
    n = len(data.x_train)
    per_epoch = math.ceil(n / task.batch_size)
    total, step = per_epoch * epochs, 0
    gen = torch.Generator().manual_seed(seed)
    sample = data.x_train[:1]
    reports = []
    for epoch in range(epochs):
        A.on_epoch(model, epoch, epochs)  # no-op for the baselines
        if gradual is not None:
            gradual.on_epoch(model, epoch, epochs)
        if method == "mag-1shot" and epoch == epochs // 2:
            M.magnitude_prune(model, match)
        model.train()
        order = torch.randperm(n, generator=gen)
        for i in range(0, n, task.batch_size):
            idx = order[i:i + task.batch_size]
            for g in opt.param_groups:
                g["lr"] = 0.5 * task.lr * (1 + math.cos(math.pi * step / total))
            opt.zero_grad(set_to_none=True)
            task.loss_fn(model(data.x_train[idx]), data.y_train[idx]).backward()
            opt.step()
            step += 1
        reports.append(sparsity_report(model, sample))
    model.eval()
    with torch.no_grad():
        c, t = task.metric_counts(model(data.x_test), data.y_test)
    last = reports[-1]
    return {"method": method, "target": target, "seed": seed, "acc": c / t, "sparsity": last["sparsity"],
            "layer_sparsity": last["layer_sparsity"], "inference_flops_ratio": last["inference_flops_ratio"],
            "train_flops_ratio": cumulative_train_flops_ratio(reports)}


def mean(rows: list[dict], key: str) -> float:
    return statistics.fmean(r[key] for r in rows)


def table(results: list[dict], task: str, epochs: int, seeds: int, secs: float | None) -> str:
    dense = [r for r in results if r["method"] == "dense"]
    lines = [f"Task `{task}`, {epochs} epochs, {seeds} seed(s), mean over seeds; dense accuracy "
             f"{100 * mean(dense, 'acc'):.1f}%" + (f" ({secs:.0f} s on 1 thread)" if secs else "") + ". Train FLOPs: whole run against dense; "
             "inference FLOPs: final model against dense (reduction = 1/ratio).", "",
             "| target | method | accuracy % | sparsity % | train FLOPs ratio (reduction) | inference FLOPs ratio "
             "(reduction) |", "|---|---|---|---|---|---|"]
    targets = sorted({r["target"] for r in results if r["method"] != "dense"})
    for t in targets:
        for mth in METHODS:
            rows = [r for r in results if r["method"] == mth and r["target"] == t]
            if not rows:
                continue
            tr, inf = mean(rows, "train_flops_ratio"), mean(rows, "inference_flops_ratio")
            accs = [100 * r["acc"] for r in rows]
            spread = f" ± {statistics.pstdev(accs):.1f}" if len(accs) > 1 else ""
            lines.append(f"| {t:.2f} | {mth} | {statistics.fmean(accs):.1f}{spread} | "
                         f"{100 * mean(rows, 'sparsity'):.1f} | {tr:.3f} ({1 / tr:.2f}×) | {inf:.3f} ({1 / inf:.2f}×) |")
    return "\n".join(lines)


METHODS = ("as-ga", "as-ga50", "as-a0", "mag-grad", "mag-1shot")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", default="mnist1d-cnn")
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=None, help="default: 2 × the task's epochs")
    ap.add_argument("--targets", default="0.5,0.7,0.8,0.9")
    ap.add_argument("--print-only", action="store_true")
    ap.add_argument("--json", type=pathlib.Path, default=None, help="also write the per-run results here")
    ap.add_argument("--from-json", type=pathlib.Path, default=None, help="re-tabulate results written by --json")
    a = ap.parse_args()
    torch.set_num_threads(1)
    task = get_task(a.task)
    epochs = a.epochs or 2 * task.epochs
    targets = [float(t) for t in a.targets.split(",")]
    t0 = time.perf_counter()
    results = json.loads(a.from_json.read_text()) if a.from_json else []
    for seed in range(0 if a.from_json else a.seeds):
        results.append(run(task, "dense", 0.0, seed, epochs, match=0.0) | {"method": "dense"})
        for t in targets:
            ga = run(task, "as-ga", t, seed, epochs)
            results.append(ga)
            for mth in ("as-ga50", "as-a0"):
                results.append(run(task, mth, t, seed, epochs))
            for mth in ("mag-grad", "mag-1shot"):
                results.append(run(task, mth, t, seed, epochs, match=ga["sparsity"]))
            print(" | ".join(f"{r['method']} {100 * r['acc']:.1f}% s={r['sparsity']:.3f}" for r in results[-5:]),
                  flush=True)
    secs = None if a.from_json else time.perf_counter() - t0
    text = table(results, a.task, epochs, a.seeds, secs)
    print(text)
    if a.json:
        a.json.write_text(json.dumps(results, indent=1))
    if not a.print_only:
        doc = DOC.read_text()
        tag = f"autosparse-table {a.task}"
        pat = re.compile(rf"(<!-- {re.escape(tag)} -->\n)(?:.*?\n)?(<!-- /{re.escape(tag)} -->)", re.S)
        if not pat.search(doc):
            raise SystemExit(f"markers <!-- {tag} --> ... <!-- /{tag} --> not found in {DOC}")
        DOC.write_text(pat.sub(lambda m: m.group(1) + text + "\n" + m.group(2), doc))
        print(f"wrote {DOC}")


if __name__ == "__main__":
    main()
