"""Launching P worker processes on one machine with torch.distributed (gloo, loopback TCP), bounded in time.

``launch(fn, nproc, args)`` spawns ``nproc`` processes (``torch.multiprocessing``, start method ``spawn``), each
with one torch thread, initialises the process group (``init_method tcp://127.0.0.1:<free port>``, backend gloo,
``timeout`` = ``init_timeout_s`` for the rendezvous and every collective), calls ``fn(rank, nproc, *args)`` and
returns the list of per-rank return values (pickled through a temporary folder). Failure is never a hang:

- a worker that raises: RuntimeError naming the rank and the worker's exception (its traceback is on stderr);
- a worker that dies (signal, ``os._exit``): RuntimeError "worker rank R exited with code C" as soon as it is seen;
  the other workers are terminated;
- a rank that never connects / a collective that waits for a dead peer: gloo raises after ``init_timeout_s``;
- anything running past ``timeout_s``: TimeoutError, all workers terminated.

``run_data_parallel(task, recipe, settings, nproc, hook)`` trains a ``lowp.experiments`` task data-parallel under a
recipe with a gradient communication hook (``lowp.distributed.hooks``) and returns a result dict (the fields of
``lowp.experiments.train.RunResult`` plus ``nproc``, ``grad_hook``, ``bytes_per_step``, ``dense_bytes_per_step``,
``compression_ratio``, ``comm`` and ``replica_max_abs_diff``).
"""
from __future__ import annotations

import datetime
import json
import os
import pickle
import socket
import tempfile
import time
from typing import Any, Callable

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(rank: int, fn: Callable, nproc: int, port: int, args: tuple, out_dir: str, init_timeout_s: float,
           threads: int) -> None:
    torch.set_num_threads(threads)
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=nproc,
                            timeout=datetime.timedelta(seconds=init_timeout_s))
    try:
        result = fn(rank, nproc, *args)
        tmp = os.path.join(out_dir, f".rank{rank}.tmp")
        with open(tmp, "wb") as f:
            pickle.dump(result, f)
        os.replace(tmp, os.path.join(out_dir, f"rank{rank}.pkl"))
        dist.barrier()  # no rank tears gloo down while a peer still talks to it (seen as SIGABRT at exit)
    finally:
        dist.destroy_process_group()


def launch(fn: Callable, nproc: int, args: tuple = (), *, timeout_s: float = 600.0, init_timeout_s: float = 60.0,
           threads: int = 1) -> list[Any]:
    """Run ``fn(rank, nproc, *args)`` in ``nproc`` spawned processes inside an initialised gloo process group;
    return the per-rank results. ``fn`` and ``args`` must be picklable (``fn`` a module-level function)."""
    if isinstance(nproc, bool) or not isinstance(nproc, int) or nproc < 1:
        raise ValueError(f"nproc must be a positive int, got {nproc!r}")
    if not timeout_s > 0 or not init_timeout_s > 0:
        raise ValueError("timeouts must be > 0")
    with tempfile.TemporaryDirectory(prefix="lowp-dist-") as out_dir:
        port = free_port()
        ctx = mp.start_processes(_entry, args=(fn, nproc, port, tuple(args), out_dir, float(init_timeout_s), threads),
                                 nprocs=nproc, join=False, start_method="spawn")
        deadline = time.monotonic() + timeout_s
        try:
            while not ctx.join(timeout=0.5):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"distributed run of {getattr(fn, '__name__', fn)} with {nproc} processes did "
                                       f"not finish within {timeout_s:g} s; workers terminated")
        except mp.ProcessExitedException as e:
            raise RuntimeError(f"worker rank {e.error_index} (pid {e.error_pid}) exited with code {e.exit_code} "
                               f"({e.signal_name or 'no signal'}); other workers terminated") from None
        except mp.ProcessRaisedException as e:
            raise RuntimeError(_worker_errors(ctx, e.error_index)) from None
        finally:
            for p in ctx.processes:
                if p.is_alive():
                    p.terminate()
            for p in ctx.processes:
                p.join(5)
                if p.is_alive():
                    p.kill()
                    p.join(5)
        results = []
        for r in range(nproc):
            path = os.path.join(out_dir, f"rank{r}.pkl")
            if not os.path.exists(path):
                raise RuntimeError(f"worker rank {r} finished without a result")
            with open(path, "rb") as f:
                results.append(pickle.load(f))
        return results


def _last_line(text: str) -> str:
    return next((ln.strip() for ln in reversed(text.strip().splitlines()) if ln.strip()), "")


def _worker_errors(ctx, first: int) -> str:
    """One message for the failed workers, the root cause first: a rank whose error is not a broken connection
    (the others' gloo errors are consequences of a peer that died)."""
    deadline = time.monotonic() + 3.0  # give the peers a moment to report their own errors
    while time.monotonic() < deadline and any(p.is_alive() for p in ctx.processes):
        time.sleep(0.1)
    errs = {}
    for rank, path in enumerate(ctx.error_files):
        try:
            with open(path, "rb") as f:
                errs[rank] = _last_line(pickle.load(f))
        except (OSError, EOFError, pickle.UnpicklingError):
            code = ctx.processes[rank].exitcode
            if code is not None and code > 0:  # died without a Python exception (os._exit, crash in C++)
                errs[rank] = f"exited with code {code}"
    if not errs:
        return f"worker rank {first} failed"
    secondary = ("Connection reset", "Connection closed", "Broken pipe", "Timed out", "timed out")
    order = sorted(errs, key=lambda r: (any(s in errs[r] for s in secondary), r != first, r))
    head = f"worker rank {order[0]} failed: {errs[order[0]]}"
    rest = "; ".join(f"rank {r}: {errs[r][:160]}" for r in order[1:])
    return head + (f" (then {rest})" if rest else "")


# ----------------------------------------------------------------------------------------- data-parallel training

def shard(idx: torch.Tensor, rank: int, nproc: int) -> torch.Tensor:
    """This rank's contiguous share of a global batch of indices (sizes differ by at most one)."""
    return idx.tensor_split(nproc)[rank]


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
        lv = torch.tensor([float(loss.detach()) * n, float(n)], dtype=torch.float64)
        dist.all_reduce(lv)
        return float(lv[0] / lv[1])


def _dp_worker(rank: int, nproc: int, task_name: str, recipe: Any, settings: dict, hook: str,
               numerics_every: int | None = None) -> dict:
    from torch.nn.parallel import DistributedDataParallel as DDP

    from ..experiments.train import (RunSettings, _scale, _sparsity_fields, apply_recipe, peak_rss_mb,
                                     prepare_run, step_timing, train_epochs)
    from .hooks import register_comm_hook

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
            **step_timing(loop.step_times), "peak_rss_mb": peak_rss_mb(), **_sparsity_fields(loop.sparsity_reports)}


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
    (PACT alpha, AutoSparse sparsity, with the ``sparsity`` / FLOPs fields) and ``numerics_every`` turns on the
    numerics collector (rank 0's records, over its shards).

    Returns a dict with the fields of ``RunResult.to_dict()`` (``RunResult.from_dict`` accepts it: it ignores the
    extra keys) plus ``nproc``, ``grad_hook``, ``bytes_per_step`` (compressed gradient message of one worker per
    step), ``dense_bytes_per_step`` (FP32: 4 bytes per gradient entry), ``compression_ratio`` (dense / compressed),
    ``comm`` (the hook's summary; for AdaComp per-layer rates and ratios) and ``replica_max_abs_diff`` (max |Δ|
    between the replicas' final parameters; 0 when they stayed in sync). An exception in training is raised
    (RuntimeError naming the rank), a hang becomes a TimeoutError after ``timeout_s``.
    """
    from ..experiments.train import RunSettings, resolve_recipe
    from .hooks import parse_hook

    st = settings if isinstance(settings, RunSettings) else RunSettings.from_dict(dict(settings))
    spec = parse_hook(hook)  # fail fast on a bad name, before any process starts
    rec = resolve_recipe(recipe)
    from ..experiments.tasks import get_task

    t = get_task(task)
    res = launch(_dp_worker, nproc, (task, rec.to_dict(), st.to_dict(), spec.name, numerics_every),
                 timeout_s=timeout_s, init_timeout_s=init_timeout_s)[0]
    hist = res["history"]
    comm = res["comm"]
    return {
        "recipe": res["recipe"], "metric": hist[-1]["test_metric"] if hist else None, "metric_name": t.metric_name,
        "diverged": res["diverged_at"] is not None, "history": hist, "skipped_steps": res["skipped_steps"],
        "wall_s": res["wall_s"], "steps": res["steps"], "settings": st.to_dict(), "recipe_spec": res["recipe_spec"],
        "fp32_delta": None, "diverged_at": res["diverged_at"], "loss_scale": res["loss_scale"], "error": None,
        "numerics": res["numerics"], "nproc": nproc, "grad_hook": spec.name, "bytes_per_step": comm["bytes_per_step"],
        "dense_bytes_per_step": comm["dense_bytes_per_step"], "compression_ratio": comm["compression_ratio"],
        "comm": comm, "replica_max_abs_diff": res["replica_max_abs_diff"], "sparsity": res.get("sparsity"),
        "train_flops_ratio": res.get("train_flops_ratio"), "inference_flops_ratio": res.get("inference_flops_ratio"),
        "first_use_s": res.get("first_use_s"), "step_s": res.get("step_s"), "peak_rss_mb": res.get("peak_rss_mb"),
    }
