"""Helpers of the reliability probes: run ``lowp`` in a fresh process, list a process tree, register small tasks."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest
import torch
from torch import nn

from lowp.experiments import tasks as T

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def lowp_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "lowp", *args]


def env() -> dict:
    e = dict(os.environ)
    e["PYTHONPATH"] = ROOT + (os.pathsep + e["PYTHONPATH"] if e.get("PYTHONPATH") else "")
    e["OMP_NUM_THREADS"] = "1"
    return e


def popen(args, **kw) -> subprocess.Popen:
    return subprocess.Popen(lowp_cmd(*args), env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            **kw)


def run(args, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(lowp_cmd(*args), env=env(), capture_output=True, text=True, timeout=timeout)


def _ppid_map() -> dict[int, int]:
    out = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    stat = f.read()
                out[int(d)] = int(stat.rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    return out


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (Linux /proc)."""
    m = _ppid_map()
    found, frontier = set(), {pid}
    while frontier:
        kids = {p for p, pp in m.items() if pp in frontier and p not in found}
        found |= kids
        frontier = kids
    return found


def alive(pid: int) -> bool:
    """Running, not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def watched(pid: int) -> bool:
    """``pid`` runs lowp's parent watchdog thread (lowp.experiments.lifetime), i.e. its worker initializer ran."""
    from lowp.experiments.lifetime import WATCHDOG_NAME

    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                if f.read().strip() == WATCHDOG_NAME:
                    return True
    except OSError:
        pass
    return False


def wait_for(cond, timeout: float, step: float = 0.1) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(step)
    return cond()


# ---- small tasks (module level: the registry is per process; compare's --jobs workers get them pickled)

def big_linear_task() -> T.Task:
    """digits x2000 into one Linear layer: an E4M3 output role overflows to NaN at the first step (diverges)."""
    def data():
        d = T.digits_data()
        return T.TaskData(d.x_train * 2000, d.y_train, d.x_test * 2000, d.y_test)
    return T.Task("rel-big-linear", lambda: nn.Linear(64, 10), data, epochs=1, lr=1e-6, batch_size=64)


class FailsInTraining(nn.Linear):
    """Passes compare's 2-sample dry run, raises on a real batch: a run that ends in an exception."""

    def forward(self, x):
        if x.shape[0] > 2:
            raise RuntimeError("boom")
        return super().forward(x)


def failing_task() -> T.Task:
    return T.Task("rel-fails", lambda: FailsInTraining(64, 10), T.digits_data, epochs=1)


GATE = threading.Event()


class Gated(nn.Linear):
    """Blocks every training batch (more than 2 samples) until ``GATE`` is set: a run that is surely still going."""

    def forward(self, x):
        if x.shape[0] > 2 and not GATE.wait(120):
            raise RuntimeError("gate never opened")
        return super().forward(x)


def gated_task() -> T.Task:
    return T.Task("rel-gated", lambda: Gated(64, 10), T.digits_data, epochs=1, batch_size=512)


@pytest.fixture(autouse=True, scope="session")
def _tasks():
    T.register_task("rel-big-linear", big_linear_task, replace=True)
    T.register_task("rel-fails", failing_task, replace=True)
    T.register_task("rel-gated", gated_task, replace=True)
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
