"""``lowp compare`` while it runs (reliability probes): exit codes, Δ of diverged runs, recipe-name file
names, the lock on --out (also against a stale lock and a concurrent writer), kill-and-resume, and no orphan
process after SIGKILL of a ``--jobs 2`` parent."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from lowp.cli import main
from lowp.experiments import io
from lowp.experiments.compare import load_results

from .conftest import GATE, alive, descendants, watched, env, popen, run, wait_for

DIVERGES = ('task = "rel-big-linear"\nepochs = 1\n\n[[recipes]]\nname = "fp32"\n\n[[recipes]]\nname = "nan-out"\n'
            'base = "fp32"\noverrides = {output = {format = "e4m3"}}\n')


@pytest.mark.parametrize("case, allow, rc", [("diverged", False, 1), ("diverged", True, 0), ("error", False, 1),
                                             ("error", True, 0), ("ok", False, 0)])
def test_exit_status(tmp_path, capsys, case, allow, rc):
    out = str(tmp_path / "o")
    if case == "diverged":
        (tmp_path / "c.toml").write_text(DIVERGES)
        argv = ["compare", "--config", str(tmp_path / "c.toml"), "--seed", "0", "--out", out, "--quiet"]
    else:
        argv = ["compare", "--task", "rel-fails" if case == "error" else "digits-mlp", "--recipes", "fp32",
                "--epochs", "1", "--seed", "0", "--out", out, "--quiet"]
    got = main(argv + (["--allow-failures"] if allow else []))
    cap = capsys.readouterr()
    assert got == rc
    comp = load_results(out)  # results are written whatever the status
    statuses = {r.status for r in comp.runs}
    assert statuses == ({"ok", "diverged"} if case == "diverged" else {case})
    if rc == 1:
        assert "exit status 1" in cap.err and cap.err.count("\n") == 1
    if case == "diverged":  # item 11: no Δ computed from a NaN model, in results.json and in the table
        d = {r.recipe: r for r in comp.runs}
        assert d["nan-out"].fp32_delta is None and d["fp32"].fp32_delta == 0.0
        row = next(line for line in cap.out.splitlines() if line.startswith("nan-out"))
        assert "nan" not in row.lower().replace("nan-out", "")


def test_help_documents_exit_codes(capsys):
    with pytest.raises(SystemExit):
        main(["compare", "--help"])
    h = capsys.readouterr().out
    assert "exit status:" in h and "--allow-failures" in h
    for code in ("0 ", "1 ", "2 ", "130"):
        assert f"\n  {code}" in h


def test_recipe_names_as_files(tmp_path):
    """a/b and a_b get distinct run files; a 300-character name works; nothing lands outside --out."""
    long = "L" * 300
    cfg = "".join(f'[[recipes]]\nname = {json.dumps(n)}\nbase = "fp32"\n\n' for n in ("a/b", "a_b", "../../up", long))
    (tmp_path / "c.toml").write_text('task = "digits-mlp"\nepochs = 1\n\n' + cfg)
    out = tmp_path / "o"
    assert main(["compare", "--config", str(tmp_path / "c.toml"), "--out", str(out), "--quiet",
                 "--batch-size", "512", "--seed", "0"]) == 0
    files = sorted(os.listdir(out / "runs"))
    assert len(files) == 4 and all(len(f) < 100 for f in files)
    assert sorted(json.loads((out / "runs" / f).read_text())["result"]["recipe"] for f in files) == sorted(
        ["a/b", "a_b", "../../up", long])
    assert sorted(os.listdir(tmp_path)) == ["c.toml", "o"]
    assert io.safe_filename("fp8-hybrid") == "fp8-hybrid"  # plain names keep their files (resume of old folders)


def test_lock_refuses_second_writer_and_ignores_stale_lock(tmp_path, capsys):
    out = tmp_path / "o"
    out.mkdir()
    argv = ["compare", "--task", "digits-mlp", "--recipes", "fp32", "--epochs", "1", "--seed", "0", "--out", str(out),
            "--quiet"]
    with io.locked_dir(str(out), "test holder"):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "in use by test holder" in err and err.count("\n") == 1
        assert sorted(os.listdir(out)) == [".lowp.lock"]
    # a lock left by a SIGKILLed holder (a plain process holding the same flock, without lowp's start-up cost): the
    # kernel released it, the file remains
    holder = subprocess.Popen([sys.executable, "-c", "import fcntl, os, sys, time\n"
                               "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); fcntl.flock(fd, fcntl.LOCK_EX)\n"
                               "os.write(fd, b'doomed'); print('held', flush=True); time.sleep(600)",
                               str(out / ".lowp.lock")], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    assert main(argv) == 2
    assert "in use by doomed" in capsys.readouterr().err
    holder.kill()
    holder.wait()
    assert "doomed" in (out / ".lowp.lock").read_text()
    assert main(argv) == 0


def test_concurrent_compares_do_not_mix(tmp_path, capsys):
    """Item 9: a second compare with other settings into the same --out is refused while the first runs (held at
    its first training batch); the first one's config.toml and results.json then agree."""
    out = str(tmp_path / "o")
    GATE.clear()
    box = {}
    first = threading.Thread(target=lambda: box.update(rc=main(
        ["compare", "--task", "rel-gated", "--recipes", "fp32", "--epochs", "3", "--seed", "0", "--out", out,
         "--quiet"])))
    first.start()
    try:
        assert wait_for(lambda: os.path.exists(os.path.join(out, "config.toml")), 60)
        rc = main(["compare", "--task", "rel-gated", "--recipes", "fp32", "--epochs", "2", "--out", out, "--quiet"])
        err = capsys.readouterr().err
        assert rc == 2 and "in use by lowp compare" in err and err.count("\n") == 1
    finally:
        GATE.set()
        first.join(120)
    assert box["rc"] == 0
    res = json.loads(open(os.path.join(out, "results.json")).read())
    assert res["epochs"] == 3 and "epochs = 3" in open(os.path.join(out, "config.toml")).read()


RESUME_ARGS = ["--task", "digits-mlp", "--recipes", "fp32,bf16", "--epochs", "2", "--batch-size", "256", "--seed", "0",
               "--quiet"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref")
    assert main(["compare", *RESUME_ARGS, "--out", str(out)]) == 0
    return load_results(str(out))


@pytest.mark.parametrize("sig, rc", [(signal.SIGKILL, -signal.SIGKILL), (signal.SIGINT, 130)])
def test_interrupt_and_resume_reproduce_the_uninterrupted_run(tmp_path, uninterrupted, sig, rc):
    """SIGKILL or SIGINT of a compare after its first recipe, then a rerun: the finished run is reused and the
    results equal an uninterrupted run's (the reference and the rerun run in this process, the interrupted one in a
    fresh one)."""
    out = tmp_path / "killed"
    p = popen(["compare", *RESUME_ARGS, "--out", str(out)])
    assert wait_for(lambda: (out / "runs" / "fp32@0.json").exists(), 90)
    p.send_signal(sig)
    _, err = p.communicate(timeout=60)
    if p.returncode != 0:  # (0: it finished before the signal came)
        assert p.returncode == rc, err
        if sig == signal.SIGINT:
            assert err.strip().splitlines()[-1] == "lowp: interrupted"
    assert main(["compare", *RESUME_ARGS, "--out", str(out)]) == 0
    b = load_results(str(out))
    assert "fp32@0" in b.reused
    for ra, rb in zip(uninterrupted.runs, b.runs):
        assert (ra.recipe, ra.metric, ra.history, ra.fp32_delta) == (rb.recipe, rb.metric, rb.history, rb.fp32_delta)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_no_orphans_after_sigkill_of_jobs_parent(tmp_path):
    """Item 2: SIGKILL of the parent of a --jobs 2 compare; 10 s later no process it started is alive."""
    out = str(tmp_path / "o")
    p = popen(["compare", "--task", "digits-mlp", "--recipes", "fp32,bf16", "--epochs", "200", "--jobs", "2",
               "--out", out, "--quiet"])
    try:
        # both workers (past their initializer: they run the parent watchdog) and the resource tracker started
        assert wait_for(lambda: sum(watched(k) for k in descendants(p.pid)) >= 2, 90), descendants(p.pid)
        kids = descendants(p.pid)
        assert len(kids) >= 3
        p.send_signal(signal.SIGKILL)
        p.wait()
        assert wait_for(lambda: not any(alive(k) for k in kids), 10), [k for k in kids if alive(k)]
    finally:
        for k in descendants(p.pid) | (kids if "kids" in dir() else set()):
            if alive(k):
                os.kill(k, signal.SIGKILL)
