"""Which code made a run: the lowp version, the torch version and a digest of lowp's own source files.

``lowp compare`` writes this beside each finished run (``runs/<recipe>@<seed>.json``, key ``made_by``) and, on a
rerun into the same folder, tells a run made by this code from one made by another build (an upgraded lowp or
torch, an edited checkout) or by a lowp that did not record it. Such a run has the same settings and recipe, but its
bits may differ: it is reused only with a warning and listed in results.json and the report, or trained again with
``--rerun-stale``.

The digest is SHA-256 over the package's ``.py`` and ``.json`` files (their paths relative to the package and their
bytes, in sorted order), cut to 12 hex digits: any edit counts, a docstring included, since the digest cannot tell
which edits change bits. Not covered: the code of a user's own task (``--task module:function``) and the other
installed packages (numpy, transformers); a run's key holds the task's name and settings, not its code. The
digest is read once per process, when a comparison starts (and when a worker process starts): a process that
imported lowp long before its sources were edited records the edited sources.
"""
from __future__ import annotations

import functools
import hashlib
import os
from typing import Any

_SUFFIXES = (".py", ".json")


def source_digest(root: str | None = None) -> str:
    """12 hex digits of SHA-256 over the ``.py``/``.json`` files under ``root`` (default: the lowp package)."""
    if root is None:
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        files += [os.path.join(dirpath, f) for f in filenames if f.endswith(_SUFFIXES)]
    h = hashlib.sha256()
    for path in sorted(files, key=lambda p: os.path.relpath(p, root).replace(os.sep, "/")):
        with open(path, "rb") as f:
            data = f.read()
        h.update(os.path.relpath(path, root).replace(os.sep, "/").encode() + b"\0")
        h.update(len(data).to_bytes(8, "little") + data)
    return h.hexdigest()[:12]


@functools.lru_cache(maxsize=1)
def made_by() -> dict[str, str]:
    """This process's build: ``{"lowp": version, "torch": version, "source": digest}`` (computed once)."""
    import torch

    from .. import __version__

    return {"lowp": __version__, "torch": torch.__version__, "source": source_digest()}


def same_build(recorded: Any) -> bool:
    """Whether a run's recorded ``made_by`` is this process's build (False for a run that recorded none)."""
    return isinstance(recorded, dict) and recorded == made_by()


def describe(recorded: Any) -> str:
    """One phrase naming a recorded build, e.g. ``lowp 0.1.0, torch 2.13.0+cpu, source 3f2a...``, or that none
    was recorded."""
    if not isinstance(recorded, dict):
        return "a lowp that did not record its build"
    return (f"lowp {recorded.get('lowp', '?')}, torch {recorded.get('torch', '?')}, "
            f"source {recorded.get('source', '?')}")
