"""The FP32 model cache of ``lowp ptq`` (``lowp.experiments.ptq``): one file per distinct key, keyed by everything
that determines the trained model, written atomically, verified on load."""
from __future__ import annotations

import hashlib
import io as _io
import json
import os
import sys
import warnings
from typing import Any

import torch
from torch import nn

from . import io
from .tasks import Task


def cache_key(task: Task, epochs: int, seed: int) -> dict[str, Any]:
    """What determines the cached FP32 model: task, seed, epochs, the optimiser and its hyper-parameters, the
    learning-rate schedule and the lowp/torch versions."""
    from .. import __version__

    return {"task": task.name, "seed": seed, "epochs": epochs, "lr": task.lr, "batch_size": task.batch_size,
            "momentum": task.momentum, "weight_decay": task.weight_decay, "optimizer": task.optimizer,
            "schedule": task.schedule, "warmup_steps": task.warmup_steps, "lowp_version": __version__,
            "torch_version": torch.__version__.split("+")[0]}


def cache_path(out: str, key: dict[str, Any]) -> str:
    """``DIR/fp32_<task>-<first 12 hex digits of the key's SHA-256>.pt``: one file per distinct key."""
    h = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    return os.path.join(out, f"fp32_{io.safe_filename(key['task'])}-{h}.pt")


def load_cached(path: str, key: dict[str, Any], model: nn.Module) -> str | None:
    """Load the cached state into ``model``; returns None on success, else why the file was not usable (it is then
    to be discarded: unreadable, truncated, not a lowp cache, another key, or weights that do not fit the model).
    ``torch.load(weights_only=True)``: a crafted pickle is refused, never executed."""
    try:
        with warnings.catch_warnings():  # torch warns about foreign pickle protocols: the file is refused anyway
            warnings.simplefilter("ignore")
            blob = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as e:  # noqa: BLE001 - any unreadable file is a corrupt cache
        return f"unreadable ({type(e).__name__})"
    if not isinstance(blob, dict) or set(blob) != {"key", "state_dict"} or not isinstance(blob["state_dict"], dict):
        return "not a lowp ptq cache"
    if blob["key"] != key:
        return "made with other settings"
    try:
        model.load_state_dict(blob["state_dict"])
    except Exception as e:  # noqa: BLE001
        return f"weights do not fit the model ({type(e).__name__})"
    if not all(torch.isfinite(v).all() for v in model.state_dict().values() if v.is_floating_point()):
        return "non-finite weights"
    return None


def save_cached(path: str, key: dict[str, Any], model: nn.Module) -> bool:
    """Write the cache atomically; a failure (a full disk) is a warning: the run goes on without a cache."""
    buf = _io.BytesIO()
    torch.save({"key": key, "state_dict": model.state_dict()}, buf)
    try:
        io.atomic_write_bytes(path, buf.getvalue())
        return True
    except OSError as e:
        print(f"lowp ptq: warning: cannot write the FP32 model cache {path}: {e.strerror or e}", file=sys.stderr)
        return False
