"""Tables of docs/results/numerics.md (issues 3 and 5): FP8-E5M2 with and without loss scaling, from the output
directories of ``lowp compare --config examples/e5m2-underflow.toml`` (one per seed), plus two measurements that
explain them.

    lowp compare --config examples/e5m2-underflow.toml --out /tmp/e5m2_underflow            # seed 0
    lowp compare --config examples/e5m2-underflow.toml --seed 1 --out /tmp/e5m2_underflow_s1
    PYTHONPATH=. python scripts/numerics_tables.py /tmp/e5m2_underflow /tmp/e5m2_underflow_s1 [--magnitudes] [--scan]

Prints Markdown:

- the final metric per recipe and seed (from each DIR/results.json);
- per emulated layer, the fraction of nonzero grad_output / grad_input values flushed to zero, unscaled vs scaled,
  averaged over the sampled steps of the first and of the last epoch (first DIR);
- ``--magnitudes``: in plain FP32 training of the task (seed 0), per GEMM-like module, the share of its nonzero
  output gradients below 2^-16 (E5M2's smallest subnormal) and below 2^-24 (where even 8-bit stochastic rounding
  always returns 0), and the share of the gradient's L1 mass below 2^-16, at the first 10 steps and in the last
  epoch (a few seconds);
- ``--scan``: fp8-e5m2-noscale (and fp32 at both ends) with the loss divided by K = 1, 8, 32, 128 instead of the
  task's 128 (K micro-batches per global batch): how small the gradients must get before the unscaled run fails
  (about 2 minutes on one thread).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys

import torch
import torch.nn.functional as F

TASK = "tiny-transformer-accum"
UNSCALED, SCALED = "fp8-e5m2-noscale", "fp8-e5m2"


def load(d: str) -> dict:
    with open(os.path.join(d, "results.json")) as f:
        return json.load(f)


def accuracy_table(dirs: list[str]) -> str:
    res = [load(d) for d in dirs]
    recipes = [r["recipe"] for r in res[0]["results"]]
    seeds = [r["seed"] for r in res]
    head = "| recipe | " + " | ".join(f"seed {s}" for s in seeds) + " | mean | Δ fp32 (mean, pts) |"
    lines = [head, "|" + "---|" * (len(seeds) + 3)]
    means = {}
    for name in recipes:
        vals = [next(r["metric"] for r in x["results"] if r["recipe"] == name) for x in res]
        means[name] = sum(vals) / len(vals)
        lines.append(f"| {name} | " + " | ".join(f"{100 * v:.2f}" for v in vals) + f" | {100 * means[name]:.2f} | "
                     + (f"{100 * (means[name] - means['fp32']):+.2f} |" if "fp32" in means else "- |"))
    return "\n".join(lines)


def _window(records: list[dict], steps_per_epoch: int, epochs: int, which: str) -> list[dict]:
    lo, hi = (0, steps_per_epoch) if which == "start" else ((epochs - 1) * steps_per_epoch, epochs * steps_per_epoch)
    return [r for r in records if lo <= r["step"] < hi]


def _mean(records: list[dict], layer: str | None, role: str) -> float | None:
    rs = [r for r in records if r["role"] == role and (layer is None or r["layer"] == layer)]
    if not rs:
        return None
    if layer is None:  # all layers: element-weighted
        n = sum(r["n"] for r in rs)
        return sum(r["underflow"] * r["n"] for r in rs) / n if n else None
    return sum(r["underflow"] for r in rs) / len(rs)


def underflow_table(d: str, roles=("grad_output", "grad_input")) -> str:
    res = load(d)
    runs = {r["recipe"]: r for r in res["results"]}
    st = runs[UNSCALED]["settings"]
    task_n = runs[UNSCALED]["steps"] // len(runs[UNSCALED]["history"])  # optimizer steps per epoch
    per_epoch, epochs = task_n, len(runs[UNSCALED]["history"])
    win = {(rec, w): _window(runs[rec]["numerics"], per_epoch, epochs, w)
           for rec in (UNSCALED, SCALED) for w in ("start", "end")}
    layers = []
    for r in runs[UNSCALED]["numerics"]:
        if r["layer"] not in layers:
            layers.append(r["layer"])
    cols = [(role, rec, w) for role in roles for rec in (UNSCALED, SCALED) for w in ("start", "end")]
    short = {UNSCALED: "no scaling", SCALED: "scaled"}
    head = "| layer | " + " | ".join(f"{role} {short[rec]} {w}" for role, rec, w in cols) + " |"
    lines = [f"Seed {st['seed']}; start = the sampled steps of epoch 1, end = those of epoch {epochs}; "
             "% of nonzero values flushed to zero.", "", head, "|---|" + "---:|" * len(cols)]

    def cell(v):
        return "-" if v is None else f"{100 * v:.1f}"
    for layer in layers + [None]:
        vals = [_mean(win[(rec, w)], layer, role) for role, rec, w in cols]
        if all(v is None for v in vals):
            continue
        name = "**all (element-weighted)**" if layer is None else f"`{layer}`"
        lines.append(f"| {name} | " + " | ".join(cell(v) for v in vals) + " |")
    return "\n".join(lines)


def sqnr_table(d: str, roles=("grad_output", "grad_input", "grad_weight")) -> str:
    """Median over layers of the mean SQNR (dB) per gradient role, first and last epoch, both recipes."""
    res = load(d)
    runs = {r["recipe"]: r for r in res["results"]}
    per_epoch = runs[UNSCALED]["steps"] // len(runs[UNSCALED]["history"])
    epochs = len(runs[UNSCALED]["history"])
    lines = ["| role | " + " | ".join(f"{rec} {w}" for rec in (UNSCALED, SCALED) for w in ("start", "end")) + " |",
             "|---|" + "---:|" * 4]
    for role in roles:
        cells = []
        for rec in (UNSCALED, SCALED):
            for w in ("start", "end"):
                rs = [r for r in _window(runs[rec]["numerics"], per_epoch, epochs, w) if r["role"] == role]
                by: dict[str, list[float]] = {}
                for r in rs:
                    v = r["sqnr_db"]
                    if isinstance(v, (int, float)) and math.isfinite(v):
                        by.setdefault(r["layer"], []).append(v)
                means = sorted(sum(v) / len(v) for v in by.values())
                cells.append(f"{means[len(means) // 2]:.1f}" if means else "-")
        lines.append(f"| {role} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def magnitudes(seed: int = 0) -> str:
    """Plain FP32 training of the task with backward hooks on every GEMM-like module."""
    from lowp.experiments.tasks import get_task
    from lowp.ops.modules import Matmul

    task = get_task(TASK)
    data = task.load_data()
    torch.manual_seed(seed)
    model = task.build_model()
    opt = task.make_optimizer(model.parameters(), task.lr)
    mods = [(n, m) for n, m in model.named_modules() if isinstance(m, (torch.nn.Linear, torch.nn.Embedding, Matmul))]
    acc: dict[tuple[str, str], list[float]] = {}
    phase = ["start"]

    def hook(name):
        def h(m, gin, gout):
            if phase[0] is None:
                return
            g = gout[0].detach().abs().flatten()
            g = g[g > 0]
            if g.numel():
                a = acc.setdefault((name, phase[0]), [0.0, 0.0, 0.0, 0.0, 0.0])
                a[0] += g.numel()
                a[1] += float((g < 2.0**-16).sum())
                a[2] += float((g < 2.0**-24).sum())
                a[3] += float(g[g < 2.0**-16].sum())
                a[4] += float(g.sum())
        return h
    for n, m in mods:
        m.register_full_backward_hook(hook(n))
    n = len(data.x_train)
    per_epoch = math.ceil(n / task.batch_size)
    total, step = per_epoch * task.epochs, 0
    gen = torch.Generator().manual_seed(seed)
    for epoch in range(task.epochs):
        order = torch.randperm(n, generator=gen)
        for i in range(0, n, task.batch_size):
            phase[0] = "start" if step < 10 else ("end" if epoch == task.epochs - 1 else None)
            for g in opt.param_groups:
                g["lr"] = 0.5 * task.lr * (1 + math.cos(math.pi * step / total))
            idx = order[i:i + task.batch_size]
            opt.zero_grad()
            task.loss_fn(model(data.x_train[idx]), data.y_train[idx]).backward()
            opt.step()
            step += 1
    lines = ["| module (grad of its output) | <2^-16 start | <2^-24 start | L1 mass <2^-16 start | <2^-16 end | "
             "<2^-24 end | L1 mass <2^-16 end |", "|---|" + "---:|" * 6]
    tot = {w: [0.0] * 5 for w in ("start", "end")}
    for name, _ in mods:
        cells = []
        for w in ("start", "end"):
            a = acc.get((name, w))
            if a is None:
                cells += ["-"] * 3
                continue
            tot[w] = [x + y for x, y in zip(tot[w], a)]
            cells += [f"{100 * a[1] / a[0]:.0f}", f"{100 * a[2] / a[0]:.0f}", f"{100 * a[3] / a[4]:.0f}"]
        lines.append(f"| `{name}` | " + " | ".join(cells) + " |")
    cells = []
    for w in ("start", "end"):
        a = tot[w]
        cells += [f"{100 * a[1] / a[0]:.0f}", f"{100 * a[2] / a[0]:.0f}", f"{100 * a[3] / a[4]:.0f}"]
    lines.append("| **all** | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def scan(ks=(1, 8, 32, 128), seed: int = 0) -> str:
    from lowp.experiments.config import RecipeEntry
    from lowp.experiments.tasks import get_task
    from lowp.experiments.train import RunSettings, train_run

    base = get_task(TASK)
    lines = ["| K (loss ÷ 512·K) | fp32 | fp8-e5m2 | fp8-e5m2-noscale |", "|---|---:|---:|---:|"]
    for k in ks:
        def loss_fn(out, y, k=k):
            return F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1), ignore_index=-100,
                                   reduction="sum") / (512 * k)
        task = dataclasses.replace(base, loss_fn=loss_fn)
        st = RunSettings(TASK, seed, base.epochs, base.lr, base.batch_size)
        row = []
        for rec in ("fp32", SCALED, UNSCALED):
            if rec != UNSCALED and k not in (ks[0], ks[-1]):
                row.append("-")
                continue
            r = train_run(task, RecipeEntry(rec).resolve(), st, progress=False)
            row.append(f"{100 * r.metric:.2f}")
            print(f"  K={k} {rec}: {row[-1]}", file=sys.stderr, flush=True)
        lines.append(f"| {k} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("dirs", nargs="*", help="lowp compare output directories (one per seed)")
    p.add_argument("--magnitudes", action="store_true", help="FP32 gradient magnitudes per module")
    p.add_argument("--scan", action="store_true", help="accuracy against the loss divisor K")
    a = p.parse_args()
    torch.set_num_threads(1)
    if a.dirs:
        print("## Accuracy\n\n" + accuracy_table(a.dirs) + "\n")
        print("## Underflow per layer\n\n" + underflow_table(a.dirs[0]) + "\n")
        print("## SQNR of the gradient roles (median over layers, dB)\n\n" + sqnr_table(a.dirs[0]) + "\n")
    if a.magnitudes:
        print("## FP32 gradient magnitudes (% of nonzero values)\n\n" + magnitudes() + "\n")
    if a.scan:
        print("## Loss divisor scan (seed 0)\n\n" + scan() + "\n")


if __name__ == "__main__":
    main()
