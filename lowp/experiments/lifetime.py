"""Worker processes that die with their parent.

A ``ProcessPoolExecutor`` worker whose parent is killed with SIGKILL does not notice: it keeps its model and data
in memory (and the resource tracker alive) until its next task read fails, which may be minutes away. Two guards,
installed by the worker's initializer:

- Linux: ``prctl(PR_SET_PDEATHSIG, SIGKILL)``, so the kernel kills the worker the moment its parent thread exits;
- everywhere: a daemon thread that polls ``os.getppid()`` every ``poll_s`` seconds and ends the process with
  ``os._exit`` once the parent is gone (reparented, or its pid no longer the recorded one).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys
import threading
import time

PR_SET_PDEATHSIG = 1
PR_SET_NAME = 15
WATCHDOG_NAME = "lowp-watchdog"  # the watchdog thread's name, also in /proc/PID/task/TID/comm on Linux


def _prctl(option: int, arg) -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return libc.prctl(option, arg, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def set_parent_death_signal(sig: int = signal.SIGKILL) -> bool:
    """Ask the Linux kernel to send ``sig`` to this process when its parent exits; False where unsupported."""
    return _prctl(PR_SET_PDEATHSIG, int(sig))


def _watch(parent: int, poll_s: float) -> None:
    _prctl(PR_SET_NAME, ctypes.c_char_p(WATCHDOG_NAME.encode()))  # visible to ps -T and to tests
    while True:
        if os.getppid() != parent:
            os._exit(1)  # the parent is gone: no cleanup, nothing of ours is left to save
        time.sleep(poll_s)


def die_with_parent(parent: int, poll_s: float = 1.0) -> None:
    """Tie this process's lifetime to ``parent`` (its parent's pid at start): parent-death signal and watchdog.
    If the parent is already gone, exit at once."""
    set_parent_death_signal()
    if os.getppid() != parent:
        os._exit(1)
    threading.Thread(target=_watch, args=(parent, poll_s), name=WATCHDOG_NAME, daemon=True).start()
