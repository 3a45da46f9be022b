"""Overhead of the numerics statistics (``lowp.NumericsCollector``) on an emulated training step (issue 5).

The default compare task's model (mnist1d-cnn, batch 64) under a recipe (default fp8-e5m2), SGD steps timed with
and without a collector at the given sampling interval (default: the collector's default, every 10 steps), in
interleaved rounds on the same model; the median per-round ratio is reported, plus the cost of a sampled step
(every=1). Timings on a shared machine are noisy: indicative only. Target: <= 1.10x at the default interval.

    python benchmarks/bench_stats.py [--task mnist1d-cnn] [--recipe fp8-e5m2] [--every 10] [--steps 40] [--rounds 5]
                                     [--json PATH]
"""
from __future__ import annotations

import argparse
import contextlib
import inspect
import statistics
import time

import torch

import lowp
from lowp.analysis import NumericsCollector
from lowp.experiments.tasks import get_task

from jsonout import add_json_arg, write_json  # benchmarks/jsonout.py


def run_steps(model, opt, task, x, y, steps: int, collector) -> float:
    ctx = collector if collector is not None else contextlib.nullcontext()
    t0 = time.perf_counter()
    with ctx:
        for _ in range(steps):
            opt.zero_grad()
            task.loss_fn(model(x), y).backward()
            opt.step()
    return time.perf_counter() - t0


def main() -> None:
    default_every = inspect.signature(NumericsCollector).parameters["every"].default
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", default="mnist1d-cnn")
    ap.add_argument("--recipe", default="fp8-e5m2")
    ap.add_argument("--every", type=int, default=default_every)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    add_json_arg(ap)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    task = get_task(a.task)
    data = task.load_data()
    x, y = data.x_train[:task.batch_size], data.y_train[:task.batch_size]
    torch.manual_seed(0)
    model = lowp.emulate(task.build_model(), a.recipe)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    run_steps(model, opt, task, x, y, 5, None)  # warm-up (lazy compilation, allocator)
    ratios, ratios1, n_rec = [], [], 0
    for _ in range(a.rounds):
        base = run_steps(model, opt, task, x, y, a.steps, None)
        nc = NumericsCollector(every=a.every, model=model)
        with_c = run_steps(model, opt, task, x, y, a.steps, nc)
        n_rec = len(nc.records)
        every1 = run_steps(model, opt, task, x, y, a.steps, NumericsCollector(every=1, model=model))
        ratios.append(with_c / base)
        ratios1.append(every1 / base)
    print(f"task {a.task}, recipe {a.recipe}, {a.steps} steps x {a.rounds} rounds, threads {a.threads}")
    print(f"plain emulated step: {base / a.steps * 1e3:.2f} ms")
    print(f"with collector every={a.every}: {statistics.median(ratios):.3f}x  (records per run: {n_rec}; "
          f"rounds: {', '.join(f'{r:.3f}' for r in ratios)})")
    print(f"with collector every=1 (every step sampled): {statistics.median(ratios1):.3f}x")
    write_json(a.json, "stats", a, [
        {"every": a.every, "ratio": statistics.median(ratios), "rounds": ratios, "records_per_run": n_rec},
        {"every": 1, "ratio": statistics.median(ratios1), "rounds": ratios1}],
        plain_step_ms=base / a.steps * 1e3, default_every=default_every)


if __name__ == "__main__":
    main()
