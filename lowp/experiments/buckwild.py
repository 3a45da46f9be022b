"""BUCKWILD! (De Sa et al. 2017): asynchronous, lock-free (Hogwild-style) SGD with low-precision data and model.

P worker processes (``torch.multiprocessing``, spawn) share one model vector in shared memory (``share_memory_()``)
and update it without any lock: each worker reads the current model, computes a minibatch gradient of a softmax
(multinomial logistic) regression on scikit-learn's digits, and writes its update back in place. Reads and writes
of different workers interleave freely (races lose or mix updates, as in Hogwild).

Precision, named in the paper's DMGC terms (Data, Model, Gradient, Communication; the number is bits, 32 = FP32):

- D: the training inputs are stored in ``data_format`` (a lowp FixedFormat, e.g. ``fixed<2,6>``: 8 bits), rounded
  once, stochastically (unbiased). Digits pixels are multiples of 1/16, so ``fixed<2,6>`` holds them exactly;
  ``fixed<2,2>`` (4 bits, step 1/4) does not.
- M: the shared model is stored as integer codes k of ``model_format`` = fixed<IL,FL> (value k·2^-FL) in an
  int8 / int16 / int32 shared tensor — the real storage width, not an FP32 emulation. A write is
  w <- sat(w + SR(-lr·grad)) with SR unbiased stochastic rounding onto the 2^-FL grid (lowp's FixedFormat
  ``quantize(..., "stochastic")``, counter-based random bits seeded per worker); since w is on the grid this
  equals sat(SR(w - lr·grad)). ``rounding="nearest"`` is offered to show why unbiased rounding matters.
- G: the gradient is computed in FP32 (G32).
- C: workers communicate only through their writes to the shared model, so C = M.

``run_buckwild(cfg)`` returns accuracy, throughput (samples/s over all workers, between the first worker's start
and the last worker's end, process start-up excluded) and the DMGC signature; ``run_sync_sgd(cfg)`` is the
synchronous baseline (P gloo workers, FP32 all-reduce of the gradient every step, same samples and epochs).
Throughput on this CPU is dominated by Python/torch per-call overhead, not memory bandwidth: it compares the
schemes' synchronisation cost here, not the paper's SIMD/cache effects.
"""
from __future__ import annotations

import dataclasses
import math
import time
from typing import Any

import torch
import torch.multiprocessing as mp

from ..formats import FixedFormat, get_format

N_FEATURES, N_CLASSES = 64, 10
N_PARAMS = N_FEATURES * N_CLASSES + N_CLASSES


@dataclasses.dataclass(frozen=True)
class BuckwildConfig:
    """One BUCKWILD! run. ``data_format`` / ``model_format``: a fixed-point name (``fixed<IL,FL>``) or None for
    FP32."""

    data_format: str | None = "fixed<2,6>"
    model_format: str | None = "fixed<2,6>"
    rounding: str = "stochastic"
    workers: int = 2
    epochs: int = 10
    lr: float = 0.1
    batch_size: int = 8
    seed: int = 0

    def __post_init__(self) -> None:
        for f in ("data_format", "model_format"):
            v = getattr(self, f)
            if v is not None and not isinstance(get_format(v), FixedFormat):
                raise ValueError(f"{f} must be a fixed-point format fixed<IL,FL> or None, got {v!r}")
        if self.rounding not in ("stochastic", "nearest"):
            raise ValueError(f"rounding must be stochastic or nearest, got {self.rounding!r}")
        for f in ("workers", "epochs", "batch_size"):
            v = getattr(self, f)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{f} must be a positive int, got {v!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr!r}")

    def bits(self, which: str) -> int:
        f = getattr(self, f"{which}_format")
        return 32 if f is None else get_format(f).il + get_format(f).fl

    @property
    def dmgc(self) -> str:
        """The DMGC signature, e.g. ``D8M8G32C8``."""
        m = self.bits("model")
        return f"D{self.bits('data')}M{m}G32C{m}"


def _code_dtype(bits: int) -> torch.dtype:
    return torch.int8 if bits <= 8 else torch.int16 if bits <= 16 else torch.int32


def load_digits_data(cfg: BuckwildConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Digits (the digits tasks' fixed split, ``lowp.experiments.data.digits_data``), training inputs rounded to ``data_format`` (stochastic,
    seeded); test inputs kept in FP32 (only training data is stored in low precision)."""
    from .data import digits_data

    d = digits_data()
    x = d.x_train.clone()
    if cfg.data_format is not None:
        x = get_format(cfg.data_format).quantize(x, "stochastic", generator=torch.Generator().manual_seed(cfg.seed))
    return x, d.y_train, d.x_test, d.y_test


def _grad(w: torch.Tensor, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
    """Gradient of the mean cross-entropy of softmax(x W + b) w.r.t. the flat (W, b)."""
    W = w[: N_FEATURES * N_CLASSES].view(N_FEATURES, N_CLASSES)
    b = w[N_FEATURES * N_CLASSES:]
    p = torch.softmax(xb @ W + b, dim=1)
    p[torch.arange(len(yb)), yb] -= 1.0
    p /= len(yb)
    return torch.cat([(xb.T @ p).reshape(-1), p.sum(0)])


def accuracy(w: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> float:
    W = w[: N_FEATURES * N_CLASSES].view(N_FEATURES, N_CLASSES)
    return float(((x @ W + w[N_FEATURES * N_CLASSES:]).argmax(1) == y).float().mean())


class SharedModel:
    """The shared model: FP32 values, or integer codes of a fixed-point format (value = code · 2^-FL)."""

    def __init__(self, model_format: str | None, rounding: str) -> None:
        self.fmt = None if model_format is None else get_format(model_format)
        self.rounding = rounding
        if self.fmt is None:
            self.store = torch.zeros(N_PARAMS, dtype=torch.float32)
        else:
            bits = self.fmt.il + self.fmt.fl
            self.step = math.ldexp(1.0, -self.fmt.fl)
            self.qmin, self.qmax = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
            self.store = torch.zeros(N_PARAMS, dtype=_code_dtype(bits))
        self.store.share_memory_()

    def read(self) -> torch.Tensor:
        if self.fmt is None:
            return self.store.clone()
        return self.store.to(torch.float32) * self.step  # exact: |code| < 2^24

    def add_(self, delta: torch.Tensor, gen: torch.Generator) -> None:
        """Lock-free in-place update: FP32 add, or add of the delta rounded onto the grid, then saturate."""
        if self.fmt is None:
            self.store.add_(delta)
            return
        dq = self.fmt.quantize(delta, self.rounding, generator=gen)  # on the 2^-FL grid (saturating)
        dk = torch.round(dq / self.step).to(torch.int32)             # exact integer codes
        if not bool(dk.any()):
            return
        self.store.copy_((self.store.to(torch.int32) + dk).clamp_(self.qmin, self.qmax))

    def saturated_fraction(self) -> float:
        if self.fmt is None:
            return 0.0
        s = self.store.to(torch.int32)
        return float(((s == self.qmin) | (s == self.qmax)).float().mean())


def _hogwild_worker(rank: int, cfg: BuckwildConfig, model: SharedModel, x: torch.Tensor, y: torch.Tensor,
                    stats: torch.Tensor, barrier) -> None:
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(cfg.seed * 1009 + rank + 1)
    mine = torch.arange(rank, len(x), cfg.workers)
    barrier.wait(timeout=120)
    t0 = time.monotonic()
    samples = 0
    for _ in range(cfg.epochs):
        order = mine[torch.randperm(len(mine), generator=gen)]
        for i in range(0, len(order), cfg.batch_size):
            idx = order[i:i + cfg.batch_size]
            g = _grad(model.read(), x[idx], y[idx])
            model.add_(-cfg.lr * g, gen)
            samples += len(idx)
    stats[rank] = torch.tensor([t0, time.monotonic(), samples], dtype=torch.float64)


def run_buckwild(cfg: BuckwildConfig = BuckwildConfig(), *, timeout_s: float = 300.0) -> dict[str, Any]:
    """Asynchronous lock-free SGD with ``cfg.workers`` processes sharing the model; returns accuracy, samples/s,
    DMGC signature, saturated fraction of the model, wall time."""
    x, y, xt, yt = load_digits_data(cfg)
    x.share_memory_()
    y.share_memory_()
    model = SharedModel(cfg.model_format, cfg.rounding)
    stats = torch.zeros(cfg.workers, 3, dtype=torch.float64).share_memory_()
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(cfg.workers)
    procs = [ctx.Process(target=_hogwild_worker, args=(r, cfg, model, x, y, stats, barrier), daemon=True)
             for r in range(cfg.workers)]
    for p in procs:
        p.start()
    deadline = time.monotonic() + timeout_s
    try:
        for r, p in enumerate(procs):
            p.join(max(0.0, deadline - time.monotonic()))
            if p.is_alive():
                raise TimeoutError(f"BUCKWILD! worker {r} did not finish within {timeout_s:g} s; workers terminated")
            if p.exitcode != 0:
                raise RuntimeError(f"BUCKWILD! worker {r} exited with code {p.exitcode}")
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
                p.join(5)
    w = model.read()
    t0, t1, n = float(stats[:, 0].min()), float(stats[:, 1].max()), float(stats[:, 2].sum())
    return {"scheme": "buckwild", "dmgc": cfg.dmgc, "config": dataclasses.asdict(cfg),
            "accuracy": accuracy(w, xt, yt), "train_accuracy": accuracy(w, x, y),
            "samples_per_s": n / (t1 - t0) if t1 > t0 else None, "samples": int(n), "train_s": t1 - t0,
            "saturated_fraction": model.saturated_fraction()}


def _sync_worker(rank: int, nproc: int, cfg: BuckwildConfig) -> dict:
    import torch.distributed as dist

    x, y, xt, yt = load_digits_data(cfg)
    w = torch.zeros(N_PARAMS)
    gen = torch.Generator().manual_seed(cfg.seed)  # same order on every rank
    gb = cfg.batch_size * nproc
    dist.barrier()
    t0 = time.monotonic()
    samples = 0
    for _ in range(cfg.epochs):
        order = torch.randperm(len(x), generator=gen)
        for i in range(0, len(order), gb):
            idx = order[i:i + gb].tensor_split(nproc)[rank]
            g = _grad(w, x[idx], y[idx]) * len(idx)
            cnt = torch.tensor([float(len(idx))])
            dist.all_reduce(g)
            dist.all_reduce(cnt)
            w -= cfg.lr * g / cnt
            samples += len(idx)
    t1 = time.monotonic()
    return {"t0": t0, "t1": t1, "samples": samples, "accuracy": accuracy(w, xt, yt),
            "train_accuracy": accuracy(w, x, y)}


def run_sync_sgd(cfg: BuckwildConfig = BuckwildConfig(data_format=None, model_format=None), *,
                 timeout_s: float = 300.0) -> dict[str, Any]:
    """Synchronous data-parallel SGD baseline: ``cfg.workers`` gloo processes, each step every worker computes the
    gradient of its ``batch_size`` share of the global batch, FP32 all-reduce, identical update (D32M32G32C32
    unless ``data_format`` is set)."""
    from ..distributed.launch import launch

    res = launch(_sync_worker, cfg.workers, (cfg,), timeout_s=timeout_s)
    t0, t1 = min(r["t0"] for r in res), max(r["t1"] for r in res)
    n = sum(r["samples"] for r in res)
    return {"scheme": "sync-sgd", "dmgc": f"D{cfg.bits('data')}M32G32C32", "config": dataclasses.asdict(cfg),
            "accuracy": res[0]["accuracy"], "train_accuracy": res[0]["train_accuracy"],
            "samples_per_s": n / (t1 - t0) if t1 > t0 else None, "samples": n, "train_s": t1 - t0,
            "saturated_fraction": 0.0}
