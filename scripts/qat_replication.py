"""Miniature replication of PACT / DoReFa / WRPN (issue 7) on the ``mnist1d-cnn`` task.

Trains FP32, ``pact-wKaK`` and ``dorefa-wKaK`` for K in {2, 3, 4}, and ``wrpn-w4a4-x1`` / ``wrpn-w4a4-x2`` from the
same seeds with the task's hyper-parameters (SGD momentum 0.9, cosine schedule), records test accuracy and PACT's
α per layer after every epoch, and writes the table to docs/results/qat.md (and JSON next to it with --json).

    PYTHONPATH=. python scripts/qat_replication.py           # task model (no BatchNorm), 3 seeds, 10 epochs
    PYTHONPATH=. python scripts/qat_replication.py --bn      # the same CNN with BatchNorm after each conv
    PYTHONPATH=. python scripts/qat_replication.py --seeds 1 --epochs 3 --print-only   # smoke run

(each about 2 minutes on one thread). The table goes between the ``qat-table plain|bn`` markers of
docs/results/qat.md.

The recipes are applied by ``lowp.emulate`` (which runs the registered QAT transforms); the optimizer is built
afterwards so that PACT's α is trained.
"""
from __future__ import annotations

import argparse
import json
import math
import pathlib
import statistics
import sys
import time

import torch
from torch import nn

import lowp
from lowp.experiments.tasks import get_task
from lowp.techniques.pact import pact_alphas

RECIPES = (["fp32"] + [f"{k}-w{b}a{b}" for b in (2, 3, 4) for k in ("pact", "dorefa")]
           + ["pact-w2a2@alpha=2", "wrpn-w4a4-x1", "wrpn-w4a4-x2"])


def resolve(name: str) -> lowp.Recipe:
    """A recipe name, or ``NAME@OPTS``: the named recipe with ``:OPTS`` appended to its transforms
    (e.g. ``pact-w2a2@alpha=2`` starts PACT's alpha at 2)."""
    base, _, opts = name.partition("@")
    r = lowp.get_recipe(base)
    if opts:
        r = r.replace(name=name, transforms=tuple(f"{t}:{opts}" for t in r.transforms))
    return r


def mnist1d_cnn_bn(channels: int = 32) -> nn.Module:
    """mnist1d-cnn with BatchNorm after every convolution (conv → BN → ReLU), as the papers' networks have."""
    c = channels
    return nn.Sequential(
        nn.Unflatten(1, (1, 40)),
        nn.Conv1d(1, c, 5, 2, 2), nn.BatchNorm1d(c), nn.ReLU(),
        nn.Conv1d(c, c, 3, 1, 1), nn.BatchNorm1d(c), nn.ReLU(), nn.MaxPool1d(2),
        nn.Conv1d(c, c, 3, 1, 1), nn.BatchNorm1d(c), nn.ReLU(), nn.MaxPool1d(2),
        nn.Flatten(), nn.Linear(c * 5, 10))


def run(recipe: str, seed: int, epochs: int, bn: bool = False) -> dict:
    """Train ``mnist1d-cnn`` (or its BatchNorm variant) under ``recipe``; returns accuracy and α histories."""
    task = get_task("mnist1d-cnn")
    data = task.load_data()
    torch.manual_seed(seed)
    model = lowp.emulate(mnist1d_cnn_bn() if bn else task.build_model(), resolve(recipe))
    opt = torch.optim.SGD(model.parameters(), lr=task.lr, momentum=task.momentum, weight_decay=task.weight_decay)
    n = len(data.x_train)
    steps_per_epoch = math.ceil(n / task.batch_size)
    total, step = steps_per_epoch * epochs, 0
    gen = torch.Generator().manual_seed(seed)
    hist = {"recipe": recipe, "seed": seed, "test_acc": [], "train_loss": [], "alpha": [],
            "params": sum(p.numel() for p in model.parameters())}
    t0 = time.perf_counter()
    for _ in range(epochs):
        model.train()
        order = torch.randperm(n, generator=gen)
        losses = []
        for i in range(0, n, task.batch_size):
            for g in opt.param_groups:
                g["lr"] = 0.5 * task.lr * (1 + math.cos(math.pi * step / total))
            idx = order[i:i + task.batch_size]
            loss = task.loss_fn(model(data.x_train[idx]), data.y_train[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            losses.append(float(loss.detach()))
        model.eval()
        with torch.no_grad():
            acc = float((model(data.x_test).argmax(-1) == data.y_test).float().mean())
        hist["test_acc"].append(acc)
        hist["train_loss"].append(statistics.fmean(losses))
        hist["alpha"].append(pact_alphas(model))
    hist["wall_s"] = time.perf_counter() - t0
    return hist


def table(results: list[dict]) -> str:
    by: dict[str, list[dict]] = {}
    for r in results:
        by.setdefault(r["recipe"], []).append(r)
    fp = statistics.fmean(r["test_acc"][-1] for r in by["fp32"])
    lines = ["| recipe | params | test accuracy (mean ± sd over seeds) | Δ to FP32 | per-seed |",
             "|---|---:|---:|---:|---|"]
    for name, rs in by.items():
        accs = [r["test_acc"][-1] for r in rs]
        m = statistics.fmean(accs)
        sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
        lines.append(f"| {name} | {rs[0]['params']} | {100 * m:.1f} ± {100 * sd:.1f} % | {100 * (m - fp):+.1f} | "
                     + ", ".join(f"{100 * a:.1f}" for a in accs) + " |")
    return "\n".join(lines)


def alpha_table(results: list[dict]) -> str:
    """α per layer per epoch for the first seed of each PACT recipe."""
    out = []
    seen = set()
    for r in results:
        if not r["recipe"].startswith("pact") or r["recipe"] in seen:
            continue
        seen.add(r["recipe"])
        layers = list(r["alpha"][0])
        out.append(f"\n{r['recipe']} (seed {r['seed']}): α after each epoch\n")
        out.append("| epoch | " + " | ".join(layers) + " |")
        out.append("|---:|" + "---:|" * len(layers))
        for e, a in enumerate(r["alpha"], 1):
            out.append(f"| {e} | " + " | ".join(f"{a[k][0]:.2f}" for k in layers) + " |")
    return "\n".join(out)


def write_block(path: pathlib.Path, key: str, txt: str) -> None:
    """Replace the text between ``<!-- BEGIN qat-table KEY -->`` and ``<!-- END qat-table KEY -->`` in ``path``
    (appended at the end when the markers are missing)."""
    begin, end = f"<!-- BEGIN qat-table {key} -->", f"<!-- END qat-table {key} -->"
    doc = path.read_text() if path.exists() else ""
    block = f"{begin}\n{txt}\n{end}"
    if begin in doc and end in doc:
        doc = doc[:doc.index(begin)] + block + doc[doc.index(end) + len(end):]
    else:
        doc = doc + ("\n" if doc else "") + block + "\n"
    path.write_text(doc)
    print(f"wrote the table into {path}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=None, help="default: the task's (10)")
    ap.add_argument("--bn", action="store_true", help="the BatchNorm variant of the CNN")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--recipes", nargs="*", default=RECIPES)
    ap.add_argument("--json", type=pathlib.Path, default=None, help="also write all histories here")
    ap.add_argument("--print-only", action="store_true", help="do not write docs/results/qat.md's table file")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    epochs = args.epochs or get_task("mnist1d-cnn").epochs
    results = []
    for seed in range(args.seeds):
        for rec in args.recipes:
            r = run(rec, seed, epochs, args.bn)
            print(f"seed {seed} {rec:14s} acc {100 * r['test_acc'][-1]:5.1f}%  {r['wall_s']:5.1f}s", flush=True)
            results.append(r)
    txt = f"mnist1d-cnn, {epochs} epochs, seeds 0..{args.seeds - 1}\n\n" + table(results) + "\n" + alpha_table(results)
    print(txt)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    if not args.print_only:
        write_block(pathlib.Path(__file__).resolve().parents[1] / "docs" / "results" / "qat.md",
                    "bn" if args.bn else "plain", txt)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
