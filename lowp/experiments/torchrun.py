"""Entry point for ``torchrun``: a data-parallel comparison of recipes where the processes are started by torchrun
(one per node or several), e.g. two "nodes" on one machine::

    torchrun --nnodes 2 --nproc-per-node 1 --node-rank 0 --master-addr 127.0.0.1 --master-port 29511 \\
        -m lowp.experiments.torchrun --task mnist1d-cnn --recipes fp32,fp8-hybrid --epochs 1 --out dp-run &
    torchrun --nnodes 2 --nproc-per-node 1 --node-rank 1 --master-addr 127.0.0.1 --master-port 29511 \\
        -m lowp.experiments.torchrun --task mnist1d-cnn --recipes fp32,fp8-hybrid --epochs 1 --out dp-run

Every rank joins the process group torchrun describes (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``,
``MASTER_PORT``; backend gloo), then trains each recipe exactly as ``lowp compare --nproc P`` does
(``lowp.experiments.parallel._dp_worker``: DDP, the global batch sharded over the ranks, the gradient hook
``--grad-hook``). Rank 0 writes ``OUT/runs/<recipe>.json`` and ``OUT/results.json`` in the format of
``lowp compare`` (``lowp.experiments.compare.Comparison``) and prints the summary table. With the same settings the
results equal those of ``lowp compare --nproc P`` (same worker code, same data order and initial weights).
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import sys


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m lowp.experiments.torchrun",
                                description="data-parallel recipe comparison under torchrun (see module docstring)")
    p.add_argument("--task", default="mnist1d-cnn")
    p.add_argument("--recipes", default="fp32,fp8-hybrid", help="comma-separated recipe names")
    p.add_argument("--epochs", type=int, help="default: the task's")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lr", type=float, help="default: the task's")
    p.add_argument("--batch-size", type=int, help="global batch (default: the task's)")
    p.add_argument("--grad-hook", default="none", help="none, adacomp[...], allreduce:FORMAT[...] "
                                                        "(lowp.distributed.hooks)")
    p.add_argument("--out", default="lowp-torchrun")
    p.add_argument("--timeout-s", type=float, default=600.0, help="limit for the rendezvous and every collective")
    p.add_argument("--threads", type=int, default=1, help="torch threads per process")
    return p.parse_args(argv)


def main(argv=None) -> int:
    import torch
    import torch.distributed as dist

    from ..distributed.hooks import parse_hook
    from .compare import Comparison, _with_deltas
    from .parallel import _dp_worker, data_parallel_result
    from .report import format_table
    from .tasks import get_task
    from .train import RunResult, RunSettings, resolve_recipe

    args = parse_args(argv)
    missing = [k for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        print(f"lowp.experiments.torchrun: {', '.join(missing)} not set; start it with torchrun", file=sys.stderr)
        return 2
    task = get_task(args.task)
    recipes = [r.strip() for r in args.recipes.split(",") if r.strip()]
    resolved = [resolve_recipe(r) for r in recipes]  # unknown names fail here, on every rank, before joining
    hook = parse_hook(args.grad_hook).name
    st = RunSettings(args.task, seed=args.seed, epochs=args.epochs or task.epochs, lr=args.lr or task.lr,
                     batch_size=args.batch_size or task.batch_size)
    torch.set_num_threads(args.threads)
    dist.init_process_group("gloo", init_method="env://", timeout=datetime.timedelta(seconds=args.timeout_s))
    rank, world = dist.get_rank(), dist.get_world_size()
    try:
        runs = []
        for rec in resolved:
            res = _dp_worker(rank, world, args.task, rec.to_dict(), st.to_dict(), hook)
            if rank == 0:
                d = data_parallel_result(res, args.task, st, world, hook)
                os.makedirs(os.path.join(args.out, "runs"), exist_ok=True)
                with open(os.path.join(args.out, "runs", f"{rec.name}.json"), "w") as f:
                    json.dump(d, f, indent=1, default=str)
                r = RunResult.from_dict(d)
                runs.append(dataclasses.replace(r, nproc=world, grad_hook=hook, bytes_per_step=d["bytes_per_step"],
                                                compression_ratio=d["compression_ratio"]))
                print(f"lowp torchrun: {rec.name}: {r.metric_name} {r.metric}, replicas max |diff| "
                      f"{d['replica_max_abs_diff']}, {d['wall_s']} s", flush=True)
        if rank == 0:
            comp = Comparison(args.task, st.seed, st.epochs, st.lr, st.batch_size, task.metric_name,
                              _with_deltas(runs), args.out, (), task.higher_is_better, task.metric_unit)
            with open(os.path.join(args.out, "results.json"), "w") as f:
                json.dump({**comp.to_dict(), "nproc": world, "grad_hook": hook, "launcher": "torchrun"}, f,
                          indent=1, default=str)
            print(format_table(comp))
        dist.barrier()
    finally:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
