"""Atomic file writes for experiment outputs: write to a temporary file in the same directory, then rename, so a
reader never sees a half-written result (an interrupted run leaves either the old file or the new one)."""
from __future__ import annotations

import json
import os
import re
import tempfile
from typing import Any


def atomic_write_bytes(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (tmp file + ``os.replace``)."""
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=os.path.basename(path), dir=d)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str, obj: Any) -> None:
    """Strict JSON (NaN/Inf rejected: callers store None), indented."""
    atomic_write_text(path, json.dumps(obj, indent=2, allow_nan=False) + "\n")


def safe_filename(name: str) -> str:
    """A recipe label as a file name: characters other than letters, digits, '.', '_', '-', '+' become '_'."""
    s = re.sub(r"[^A-Za-z0-9._+-]", "_", name)
    return s if s.strip(".") else "_" + s
