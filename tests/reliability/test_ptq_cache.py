"""``lowp ptq``'s FP32 model cache and outputs (reliability probes): keyed by everything that determines the
model, verified on load, a corrupt or crafted file discarded with a one-line warning and rebuilt (a crafted pickle is
never executed), a full disk while saving leaves no file behind, an unwritable --out is refused before training,
the lock on --out, and SIGKILL + rerun reproduce the uninterrupted run."""
from __future__ import annotations

import errno
import glob
import json
import os
import pickle
import signal

import pytest
import torch

from lowp.cli import main
from lowp.experiments import io, ptq, ptq_cache
from lowp.experiments.tasks import get_task

from .conftest import popen, wait_for

BASE = ["ptq", "--task", "digits-mlp", "--method", "int8", "--calib-samples", "64"]


def _ptq(out, *extra):
    return main(BASE + ["--out", str(out), "--epochs", "1", *extra])


def _res(out):
    return json.loads(open(os.path.join(out, "results.json")).read())


def _cache(out):
    (p,) = glob.glob(os.path.join(out, "fp32_*.pt"))
    return p


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    out = tmp_path_factory.mktemp("clean")
    assert _ptq(out) == 0
    return out, _res(out), open(_cache(out), "rb").read()


def test_cache_keyed_by_settings(tmp_path, clean, capsys):
    """Item 1: other epochs / seed train a new model (never the cached one) and the results name them."""
    out = tmp_path / "o"
    assert _ptq(out) == 0
    assert main(BASE + ["--out", str(out), "--epochs", "2", "--seed", "3"]) == 0
    cap = capsys.readouterr().out
    assert cap.count("trained FP32") == 2 and "loaded" not in cap
    r = _res(out)
    assert (r["seed"], r["epochs"]) == (3, 2)
    assert len(glob.glob(str(out / "fp32_*.pt"))) == 2
    fresh = tmp_path / "fresh"
    assert main(BASE + ["--out", str(fresh), "--epochs", "2", "--seed", "3"]) == 0
    assert _res(fresh)["fp32_metric"] == r["fp32_metric"]
    # and the first settings again: loaded, same numbers as the first run
    assert _ptq(out) == 0
    assert "loaded FP32 model" in capsys.readouterr().out
    assert _res(out)["fp32_metric"] == clean[1]["fp32_metric"]


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch EXECUTED",))


def _corrupt(kind: str, good: bytes, key: dict) -> bytes:
    import io as _io

    buf = _io.BytesIO()
    if kind == "truncated":
        return good[: len(good) // 2]
    if kind == "empty":
        return b""
    if kind == "garbage":
        return os.urandom(3000)
    if kind == "malicious":
        torch.save({"key": key, "state_dict": _Evil()}, buf)
    elif kind == "plain-pickle":
        return pickle.dumps(_Evil())
    elif kind == "foreign":  # a bare state dict (what older lowp wrote)
        torch.save(torch.nn.Linear(3, 3).state_dict(), buf)
    elif kind == "wrong-shapes":
        torch.save({"key": key, "state_dict": torch.nn.Linear(3, 3).state_dict()}, buf)
    elif kind == "nan-weights":
        blob = torch.load(_io.BytesIO(good), weights_only=True)
        blob["state_dict"] = {k: torch.full_like(v, float("nan")) for k, v in blob["state_dict"].items()}
        torch.save(blob, buf)
    elif kind == "other-key":
        blob = torch.load(_io.BytesIO(good), weights_only=True)
        blob["key"] = {**blob["key"], "epochs": 99}
        torch.save(blob, buf)
    return buf.getvalue()


@pytest.mark.parametrize("kind", ["truncated", "empty", "garbage", "malicious", "plain-pickle", "foreign",
                                  "wrong-shapes", "nan-weights", "other-key"])
def test_corrupt_cache_discarded_and_rebuilt(tmp_path, clean, capsys, monkeypatch, kind):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "o"
    out.mkdir()
    name = os.path.basename(_cache(clean[0]))
    key = torch.load(_cache(clean[0]), weights_only=True)["key"]
    (out / name).write_bytes(_corrupt(kind, clean[2], key))
    assert _ptq(out) == 0
    cap = capsys.readouterr()
    assert "warning: discarding the FP32 model cache" in cap.err and cap.err.count("\n") == 1
    assert "Traceback" not in cap.err
    assert not (tmp_path / "EXECUTED").exists()
    assert _res(out)["fp32_metric"] == clean[1]["fp32_metric"]
    assert ptq_cache.load_cached(str(out / name), key, get_task("digits-mlp").build_model()) is None


def test_full_disk_while_caching_leaves_no_file(tmp_path, capsys, monkeypatch, full_disk_file):
    real = io.atomic_write_bytes

    def failing(path, data):
        if not path.endswith(".pt"):
            return real(path, data)
        fdopen = os.fdopen
        monkeypatch.setattr(os, "fdopen", lambda fd, mode: full_disk_file(fdopen(fd, mode)))
        try:
            return real(path, data)
        finally:
            monkeypatch.setattr(os, "fdopen", fdopen)

    monkeypatch.setattr(io, "atomic_write_bytes", failing)
    out = tmp_path / "o"
    assert _ptq(out) == 0
    err = capsys.readouterr().err
    assert "cannot write the FP32 model cache" in err and "No space left" in err
    assert sorted(p.name for p in out.iterdir()) == [".lowp.lock", "ptq.png", "results.json", "results.md"]
    monkeypatch.setattr(io, "atomic_write_bytes", real)
    assert _ptq(out) == 0  # the next run is not poisoned: it trains and caches
    assert "trained FP32" in capsys.readouterr().out and len(glob.glob(str(out / "fp32_*.pt"))) == 1


def test_unwritable_out_refused_before_training(tmp_path, capsys, monkeypatch):
    def denied(*a, **k):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(ptq.tempfile, "mkstemp", denied)
    (tmp_path / "o").mkdir()
    assert _ptq(tmp_path / "o") == 2
    cap = capsys.readouterr()
    assert "cannot write to output directory" in cap.err and cap.err.count("\n") == 1 and "trained" not in cap.out
    assert list((tmp_path / "o").iterdir()) == []


def test_locked_out_refused(tmp_path, capsys):
    (tmp_path / "o").mkdir()
    with io.locked_dir(str(tmp_path / "o"), "another run"):
        assert _ptq(tmp_path / "o") == 2
    err = capsys.readouterr().err
    assert "in use by another run" in err and err.count("\n") == 1


def test_sigkill_and_rerun_reproduce(tmp_path, clean):
    out = tmp_path / "o"
    p = popen(BASE + ["--out", str(out), "--epochs", "1", "--calibration", "minmax", "percentile", "entropy"])
    try:
        assert wait_for(lambda: glob.glob(str(out / "fp32_*.pt")), 90)
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    assert main(BASE + ["--out", str(out), "--epochs", "1"]) == 0
    assert _res(out)["fp32_metric"] == clean[1]["fp32_metric"]
    assert _res(out)["configs"][0]["metric"] == clean[1]["configs"][0]["metric"]
