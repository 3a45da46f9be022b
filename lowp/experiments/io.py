"""Atomic file writes for experiment outputs: write to a temporary file in the same directory, then rename, so a
reader never sees a half-written result (an interrupted run leaves either the old file or the new one)."""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import socket
import tempfile
from typing import Any


def _umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m


def atomic_write_bytes(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (tmp file + ``os.replace``)."""
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=os.path.basename(path), dir=d)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a result file gets the usual permissions
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


MAX_STEM = 80  # file-name stem length kept from a label (file systems allow 255 bytes)


def safe_filename(name: str) -> str:
    """A recipe label as a file name stem, one-to-one: characters other than letters, digits, '.', '_', '-', '+'
    become '_'. A label that needed changing, or one longer than ``MAX_STEM``, gets '-' and 8 hex digits of its
    SHA-256 appended (truncated to ``MAX_STEM`` first), so ``a/b`` and ``a_b`` never share a file and a long label
    still makes a valid name."""
    s = re.sub(r"[^A-Za-z0-9._+-]", "_", name)
    if not s.strip("."):
        s = "_" + s
    if s == name and len(s) <= MAX_STEM:
        return s
    return s[:MAX_STEM] + "-" + hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:8]


class DirectoryInUse(ValueError):
    """Another live process holds the lock on an output directory."""


def _try_lock(fcntl, fd: int, path: str) -> bool:
    """Take the lock (True), find no locking on this file system (False), or raise DirectoryInUse."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError as e:
        if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):  # a file system without locks
            return False
    try:
        holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "another process"
    except OSError:
        holder = "another process"
    raise DirectoryInUse(f"output directory {path!r} is in use by {holder}; wait for it or choose another directory")


@contextlib.contextmanager
def locked_dir(path: str, what: str = "lowp"):
    """Hold an exclusive lock on the directory ``path`` (``path/.lowp.lock``) for the ``with`` block; a second holder
    is refused with :class:`DirectoryInUse` naming the pid in the lock file. The lock is an OS advisory lock
    (``fcntl.flock``), released by the kernel when its holder exits however it exits, so the lock file a killed run
    leaves behind is never stale. Without ``fcntl`` (Windows), or on a file system without locks, there is no lock."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover
        yield
        return
    p = os.path.join(path, ".lowp.lock")
    fd = os.open(p, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if _try_lock(fcntl, fd, path):
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{what} (pid {os.getpid()} on {socket.gethostname()})\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock
