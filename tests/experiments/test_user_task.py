"""User tasks from the command line (``--task package.module:function``, ``task = "..."`` in TOML): a bad path is one
line on stderr naming it, exit 2, nothing written; examples/user_task.py runs end to end through the CLI, by
module path in-process and by file path in a subprocess."""
import json
import os
import pathlib
import subprocess
import sys

import pytest

from lowp.cli import main
from lowp.experiments import tasks as T
from lowp.experiments.user_task import split_task_path

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture
def user_modules(tmp_path, monkeypatch):
    """A folder on sys.path with a module of good and bad task functions."""
    (tmp_path / "mytasks.py").write_text(
        "from lowp.experiments import tasks as T\n"
        "def good():\n"
        "    return T.Task('mine', lambda: T.mlp((64, 10)), T.digits_data, epochs=1, batch_size=256)\n"
        "def not_a_task():\n"
        "    return 42\n"
        "def raises():\n"
        "    raise RuntimeError('no data here')\n"
        "NUMBER = 3\n")
    (tmp_path / "broken.py").write_text("import no_such_dependency_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for m in ("mytasks", "broken"):
        sys.modules.pop(m, None)


def test_good_path_resolves(user_modules):
    t = T.get_task("mytasks:good")
    assert isinstance(t, T.Task) and t.name == "mine"
    t = T.get_task(str(user_modules / "mytasks.py") + ":good")
    assert t.name == "mine"


@pytest.mark.parametrize("path,match", [
    ("nosuchpkg_xyz.mod:make", "no module named 'nosuchpkg_xyz'"),
    ("mytasks:missing", "module 'mytasks' has no attribute 'missing'"),
    ("mytasks:not_a_task", "returned int, not a lowp Task"),
    ("mytasks:NUMBER", "is a int, not a function returning a Task"),
    ("mytasks:raises", "calling it failed: RuntimeError: no data here"),
    ("broken:make", "importing module 'broken' failed: ModuleNotFoundError"),
    ("mytasks:", "bad task path"),
    ("no/such/file.py:make", "no file 'no/such/file.py'"),
])
def test_bad_path_one_line_exit_2_nothing_written(user_modules, tmp_path, capsys, path, match):
    out = tmp_path / "out"
    rc = main(["compare", "--task", path, "--recipes", "fp32", "--epochs", "1", "--out", str(out), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert err.startswith("lowp: error: ") and err.count("\n") == 1
    assert match in err and repr(path) in err  # names the bad path
    assert not out.exists()


def test_bad_path_in_toml_config(user_modules, tmp_path, capsys):
    cfg = tmp_path / "exp.toml"
    cfg.write_text('task = "mytasks:not_a_task"\nrecipes = ["fp32"]\n')
    assert main(["compare", "--config", str(cfg), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "'mytasks:not_a_task' returned int" in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists()


def test_split_task_path():
    assert split_task_path("a.b:make") == ("a.b", "make")
    assert split_task_path("C:/x/y.py:make") == ("C:/x/y.py", "make")
    with pytest.raises(ValueError, match="bad task path"):
        split_task_path(":make")


def test_example_user_task_end_to_end_through_the_cli(tmp_path, capsys, monkeypatch):
    """examples/user_task.py (a Dataset, an HF-style model, a lower-is-better error rate) by module path."""
    monkeypatch.chdir(ROOT)
    out = tmp_path / "o"
    rc = main(["compare", "--task", "examples.user_task:make_task", "--recipes", "fp32,bf16", "--epochs", "1",
               "--seed", "0", "--out", str(out), "--quiet"])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    res = json.loads((out / "results.json").read_text())
    assert res["task"] == "examples.user_task:make_task" and res["metric_name"] == "error"
    assert res["higher_is_better"] is False
    runs = {r["recipe"]: r for r in res["results"]}
    for r in runs.values():
        # chance is 0.75; measured 0.53 after one epoch (the cosine schedule fits in it)
        assert r["error"] is None and len(r["history"]) == 1 and 0 <= r["metric"] < 0.7
    assert "error % ↓" in cap.out.splitlines()[0]
    assert "lower error is better" in cap.out
    # the effective config repeats the run with the same task path
    assert 'task = "examples.user_task:make_task"' in (out / "config.toml").read_text()


def test_example_user_task_by_file_path_in_a_subprocess(tmp_path):
    out = tmp_path / "o"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    p = subprocess.run([sys.executable, "-m", "lowp", "compare", "--task",
                        str(ROOT / "examples" / "user_task.py") + ":make_task", "--recipes", "fp32", "--epochs",
                        "1", "--seed", "0", "--out", str(out), "--quiet"], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=600)
    assert p.returncode == 0, p.stderr
    res = json.loads((out / "results.json").read_text())
    assert res["results"][0]["error"] is None and res["results"][0]["steps"] == 32  # 2048 samples / 64


def test_task_path_with_worker_processes(user_modules, tmp_path, capsys):
    """--jobs 2: each spawned worker imports the task path itself."""
    out = tmp_path / "o"
    rc = main(["compare", "--task", "mytasks:good", "--recipes", "fp32,bf16", "--jobs", "2", "--seed", "0",
               "--out", str(out), "--quiet"])
    assert rc == 0, capsys.readouterr().err
    res = json.loads((out / "results.json").read_text())
    assert [(r["error"], r["steps"]) for r in res["results"]] == [(None, 6), (None, 6)]  # ceil(1437 / 256)
