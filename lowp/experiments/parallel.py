"""Data-parallel training of a lowp task: the experiment runner over ``lowp.distributed`` (moved here from
``distributed/launch.py`` so that the distributed layer imports nothing above it).

``run_data_parallel(task, recipe, settings, nproc, hook)`` trains a registered task data-parallel under a recipe
with a gradient communication hook (``lowp.distributed.hooks``), in ``nproc`` processes started by
``lowp.distributed.launch.launch``, and returns a result dict (the fields of ``RunResult`` plus ``nproc``,
``grad_hook``, ``bytes_per_step``, ``dense_bytes_per_step``, ``compression_ratio``, ``comm`` and
``replica_max_abs_diff``).
"""
from __future__ import annotations

import json
import time
from typing import Any

import torch
import torch.distributed as dist

from ..distributed.launch import launch, shard


class _Shards:
    """The data-parallel plug of ``lowp.experiments.train.train_epochs`` (see its ``SingleProcess``): forward through
    the DDP wrapper, this rank's shard of each global batch, the global mean loss weighted by shard size."""

    def __init__(self, ddp: torch.nn.Module, rank: int, nproc: int) -> None:
        self.forward, self.rank, self.nproc = ddp, rank, nproc

    def local_batch(self, idx: torch.Tensor) -> torch.Tensor | None:
        if len(idx) < self.nproc:  # not every rank would get a sample: skipped by all ranks alike
            return None
        return shard(idx, self.rank, self.nproc)

    def global_loss(self, loss: torch.Tensor, n: int) -> float:
        # the global mean loss (weighted by shard size), agreed on by all ranks, and with it the divergence decision
        lv = torch.tensor([float(loss.detach()) * n, float(n)], dtype=torch.float64, device=loss.device)
        dist.all_reduce(lv)
        return float(lv[0] / lv[1])


def _dp_worker(rank: int, nproc: int, task_name: str, recipe: Any, settings: dict, hook: str,
               numerics_every: int | None = None) -> dict:
    from torch.nn.parallel import DistributedDataParallel as DDP

    from ..distributed.hooks import register_comm_hook
    from .train import (RunSettings, _scale, apply_recipe, peak_rss_mb, prepare_run, run_extras, step_timing,
                        train_epochs)

    st = RunSettings.from_dict(settings)
    task, recipe, data, model = prepare_run(task_name, recipe, st)
    # the training contract of docs/architecture.md, applied exactly as lowp.experiments.train.train_run does
    model, opt, base = apply_recipe(model, recipe, lambda params: task.make_optimizer(params, st.lr))
    ddp = DDP(model)
    state = register_comm_hook(ddp, hook, seed=st.seed)
    t0 = time.perf_counter()
    loop = train_epochs(task, data, st, model, opt, base, parallel=_Shards(ddp, rank, nproc),
                        numerics_every=numerics_every)
    wall = time.perf_counter() - t0
    flat = torch.cat([p.detach().reshape(-1).double() for p in model.parameters()])
    hi, lo = flat.clone(), flat.clone()
    dist.all_reduce(hi, op=dist.ReduceOp.MAX)
    dist.all_reduce(lo, op=dist.ReduceOp.MIN)
    comm = state.summary()
    return {"history": loop.history, "steps": loop.steps, "wall_s": round(wall, 3), "diverged_at": loop.diverged_at,
            "skipped_steps": int(opt.skipped_steps), "loss_scale": _scale(opt),
            "recipe_spec": json.loads(json.dumps(recipe.to_dict())), "recipe": recipe.name,
            "replica_max_abs_diff": float((hi - lo).abs().max()), "comm": comm, "numerics": loop.numerics,
            **step_timing(loop.step_times, loop.step_compile_s), "peak_rss_mb": peak_rss_mb(),
            "extras": run_extras(model, loop)}


def run_data_parallel(task: str, recipe: Any, settings: Any, nproc: int = 2, hook: str = "none", *,
                      timeout_s: float = 600.0, init_timeout_s: float = 60.0,
                      numerics_every: int | None = None) -> dict:
    """Train ``task`` (a registered task name) under ``recipe`` (name, Recipe or its dict) with ``settings``
    (``lowp.experiments.train.RunSettings`` or its dict) data-parallel over ``nproc`` processes (DDP, gloo, loopback),
    gradients communicated through ``hook`` (``none``, ``adacomp``, ``allreduce:FORMAT[:stochastic][:ef]``).

    The global batch is ``settings.batch_size`` (each rank trains on a contiguous shard of it), the data order and
    initial weights are those of ``lowp.experiments.train.train_run`` with the same settings, so ``hook="none"``
    reproduces single-process training up to the FP32 reduction order. Each rank runs the training loop of
    ``train_run`` (``lowp.experiments.train.train_epochs``), so the history carries the techniques' per-epoch reports
    (PACT alpha, AutoSparse sparsity; their run metrics in ``extras``) and ``numerics_every`` turns on the
    numerics collector (rank 0's records, over its shards).

    Returns a dict with the fields of ``RunResult.to_dict()`` (``RunResult.from_dict`` accepts it: it ignores the
    extra keys) plus ``nproc``, ``grad_hook``, ``bytes_per_step`` (compressed gradient message of one worker per
    step), ``dense_bytes_per_step`` (FP32: 4 bytes per gradient entry), ``compression_ratio`` (dense / compressed),
    ``comm`` (the hook's summary; for AdaComp per-layer rates and ratios) and ``replica_max_abs_diff`` (max |Δ|
    between the replicas' final parameters; 0 when they stayed in sync). An exception in training is raised
    (RuntimeError naming the rank), a hang becomes a TimeoutError after ``timeout_s``.
    """
    from ..distributed.hooks import parse_hook
    from .tasks import get_task
    from .train import RunSettings, resolve_recipe

    st = settings if isinstance(settings, RunSettings) else RunSettings.from_dict(dict(settings))
    spec = parse_hook(hook)  # fail fast on a bad name, before any process starts
    rec = resolve_recipe(recipe)
    get_task(task)  # fail fast on an unknown task, before any process starts
    res = launch(_dp_worker, nproc, (task, rec.to_dict(), st.to_dict(), spec.name, numerics_every),
                 timeout_s=timeout_s, init_timeout_s=init_timeout_s)[0]
    return data_parallel_result(res, task, st, nproc, spec.name)


def data_parallel_result(res: dict, task: str, st: Any, nproc: int, hook: str) -> dict:
    """The result dict of :func:`run_data_parallel` from rank 0's worker result (also used by the torchrun entry
    point, ``lowp.experiments.torchrun``)."""
    from .tasks import get_task

    t = get_task(task)
    hist = res["history"]
    comm = res["comm"]
    return {
        "recipe": res["recipe"], "metric": hist[-1]["test_metric"] if hist else None, "metric_name": t.metric_name,
        "diverged": res["diverged_at"] is not None, "history": hist, "skipped_steps": res["skipped_steps"],
        "wall_s": res["wall_s"], "steps": res["steps"], "settings": st.to_dict(), "recipe_spec": res["recipe_spec"],
        "fp32_delta": None, "diverged_at": res["diverged_at"], "loss_scale": res["loss_scale"], "error": None,
        "numerics": res["numerics"], "nproc": nproc, "grad_hook": hook, "bytes_per_step": comm["bytes_per_step"],
        "dense_bytes_per_step": comm["dense_bytes_per_step"], "compression_ratio": comm["compression_ratio"],
        "comm": comm, "replica_max_abs_diff": res["replica_max_abs_diff"], "extras": res.get("extras") or {},
        "first_use_s": res.get("first_use_s"), "step_s": res.get("step_s"), "peak_rss_mb": res.get("peak_rss_mb"),
    }
