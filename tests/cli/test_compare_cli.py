"""``lowp compare`` from the command line: printed table equals results.json, one-line errors with exit 2 and
nothing written, --jobs, --config, --list-tasks."""
import json
import subprocess
import sys

import pytest

from lowp.cli import main


def test_two_recipes_table_matches_results(tmp_path, capsys):
    out = tmp_path / "o"
    rc = main(["compare", "--task", "digits-mlp", "--recipes", "fp32,bf16", "--epochs", "1", "--seed", "0",
               "--out", str(out), "--quiet"])
    cap = capsys.readouterr()
    assert rc == 0 and cap.err == ""  # --quiet: no log lines, no bars
    res = json.loads((out / "results.json").read_text())
    lines = cap.out.splitlines()
    assert lines[0].split()[:2] == ["recipe", "accuracy"]
    for e, line in zip(res["results"], lines[1:3]):
        cells = line.split()
        assert cells[0] == e["recipe"]
        assert float(cells[1]) == pytest.approx(100 * e["metric"], abs=0.005)
        assert float(cells[2]) == pytest.approx(100 * e["fp32_delta"], abs=0.005)
    assert "report.html" in cap.out


@pytest.mark.parametrize("args,match", [
    (["--task", "nope"], "unknown task 'nope'"),
    (["--recipes", "fp32,fp99"], "unknown recipe 'fp99'"),
    (["--epochs", "-1"], "epochs must be"),
    (["--jobs", "0"], "jobs must be"),
])
def test_bad_input_one_line_nothing_written(tmp_path, capsys, args, match):
    out = tmp_path / "o"
    base = ["compare", "--task", "digits-mlp", "--recipes", "fp32", "--epochs", "1", "--out", str(out), "--quiet"]
    rc = main(base + args)
    err = capsys.readouterr().err
    assert rc == 2 and match in err and err.count("\n") == 1 and err.startswith("lowp: error:")
    assert not out.exists()


def test_malformed_config_and_unwritable_out(tmp_path, capsys):
    cfg = tmp_path / "bad.toml"
    cfg.write_text("task = 'digits-mlp'\nrecipes = [fp32\n")
    assert main(["compare", "--config", str(cfg), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "malformed config" in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists()
    (tmp_path / "file").write_text("")
    assert main(["compare", "--task", "digits-mlp", "--recipes", "fp32", "--epochs", "1",
                 "--out", str(tmp_path / "file" / "o")]) == 2
    err = capsys.readouterr().err
    assert "cannot write to output directory" in err and err.count("\n") == 1


def test_config_with_override_and_cli_precedence(tmp_path, capsys):
    cfg = tmp_path / "exp.toml"
    cfg.write_text('task = "digits-mlp"\nepochs = 3\nrecipes = ["fp32", {name = "bf16-out", base = "bf16", '
                   'overrides = {output = "fp32"}}]\n')
    out = tmp_path / "o"
    assert main(["compare", "--config", str(cfg), "--epochs", "1", "--seed", "0", "--out", str(out), "--quiet"]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["epochs"] == 1  # the command line wins over the file
    spec = res["results"][1]["recipe_spec"]
    assert res["results"][1]["recipe"] == "bf16-out" and spec["name"] == "bf16-out"
    assert spec["output"]["format"] == "fp32" and spec["input"]["format"] == "bf16"
    assert "epochs = 1" in (out / "config.toml").read_text()


def test_jobs_two_processes(tmp_path, capsys):
    out = tmp_path / "o"
    assert main(["compare", "--task", "digits-mlp", "--recipes", "fp32,bf16", "--epochs", "1", "--jobs", "2",
                 "--seed", "0", "--out", str(out), "--quiet"]) == 0
    res = json.loads((out / "results.json").read_text())
    assert [e["recipe"] for e in res["results"]] == ["fp32", "bf16"]
    # same seed and settings: the parallel run matches the serial one (up to the thread count's effect on FP32
    # summation order in torch's kernels)
    serial = tmp_path / "s"
    assert main(["compare", "--task", "digits-mlp", "--recipes", "fp32", "--epochs", "1", "--seed", "0",
                 "--out", str(serial), "--quiet"]) == 0
    s = json.loads((serial / "results.json").read_text())
    a, b = s["results"][0]["history"][0], res["results"][0]["history"][0]
    assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)
    assert a["test_metric"] == pytest.approx(b["test_metric"], abs=0.01)


def test_list_tasks_and_help(capsys):
    assert main(["compare", "--list-tasks"]) == 0
    out = capsys.readouterr().out
    assert "mnist1d-cnn" in out and "tiny-transformer" in out
    r = subprocess.run([sys.executable, "-m", "lowp", "compare", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "--jobs" in r.stdout and "lowp-compare" in r.stdout
