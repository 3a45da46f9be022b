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

``shard`` is a rank's share of a global batch. The data-parallel experiment runner built on these,
``run_data_parallel``, is ``lowp.experiments.parallel``.
"""
from __future__ import annotations

import datetime
import os
import pickle
import socket
import sys
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
    # done, the result on disk: leave without the interpreter's teardown, whose C++ destructors (gloo's and the
    # TCP store's threads) still aborted a worker now and then ("terminate called without an active exception")
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


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
