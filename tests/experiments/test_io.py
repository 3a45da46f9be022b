"""lowp.experiments.io: atomic writes (a failed write leaves the old file and no temporary), one-to-one file names
for recipe labels, and the directory lock (refuses a second holder, released when the holder dies)."""
import os
import subprocess
import sys

import pytest

from lowp.experiments import io


def test_atomic_write_keeps_old_file_on_full_disk(tmp_path, monkeypatch, full_disk_file):
    p = tmp_path / "results.json"
    io.atomic_write_json(str(p), {"a": 1})
    real = os.fdopen
    monkeypatch.setattr(os, "fdopen", lambda fd, mode: full_disk_file(real(fd, mode)))
    with pytest.raises(OSError, match="No space left"):
        io.atomic_write_json(str(p), {"a": 2})
    monkeypatch.setattr(os, "fdopen", real)
    assert p.read_text() == '{\n  "a": 1\n}\n' and os.listdir(tmp_path) == ["results.json"]


def test_atomic_write_permissions_follow_umask(tmp_path):
    old = os.umask(0o022)
    try:
        io.atomic_write_text(str(tmp_path / "x"), "x")
    finally:
        os.umask(old)
    assert (tmp_path / "x").stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize("names", [("a/b", "a_b"), ("a b", "a_b", "a:b"), ("x" * 300, "x" * 301), (".", "..", "_.")])
def test_safe_filename_one_to_one_and_short(names):
    stems = [io.safe_filename(n) for n in names]
    assert len(set(stems)) == len(stems)
    for s in stems:
        assert len(s) <= io.MAX_STEM + 9 and "/" not in s and s.strip(".")


def test_safe_filename_keeps_plain_names():
    for n in ("fp32", "fp8-hybrid", "pact-w4a4", "wrpn-w4a4-x2.0", "a+b"):
        assert io.safe_filename(n) == n


def test_lock_refuses_second_holder_and_dies_with_holder(tmp_path):
    with io.locked_dir(str(tmp_path), "first"):
        with pytest.raises(io.DirectoryInUse, match="in use by first"):
            with io.locked_dir(str(tmp_path), "second"):
                pass
    with io.locked_dir(str(tmp_path), "again"):  # released on exit
        pass
    code = ("import os, sys\nfrom lowp.experiments import io\n"
            "with io.locked_dir(sys.argv[1], 'killed'):\n    os._exit(9)\n")
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    assert subprocess.run([sys.executable, "-c", code, str(tmp_path)], env=env).returncode == 9
    with io.locked_dir(str(tmp_path), "after"):  # the dead holder's lock file remains, its lock does not
        pass
