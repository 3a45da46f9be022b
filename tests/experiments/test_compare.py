"""lowp.compare end to end on small tasks: results.json against the report's table and the printed table, a
diverging recipe among finishing ones, resume, bad input, the numerics section of the report."""
import html.parser
import json
import os
import shutil

import pytest
from torch import nn

import lowp
from lowp.cli import main
from lowp.experiments import provenance, tasks as T
from lowp.experiments.compare import load_results
from lowp.experiments.report import format_table, numerics_matrix, render


def big_linear_task() -> T.Task:
    """digits ×2000 into one Linear layer: outputs reach the thousands, so an E4M3 output role (max 448, overflow ->
    NaN) makes the loss NaN at the first step, while fp32 and bf16 train normally."""
    def data():
        d = T.digits_data()
        return T.TaskData(d.x_train * 2000, d.y_train, d.x_test * 2000, d.y_test)
    return T.Task("test-big-linear", lambda: nn.Linear(64, 10), data, epochs=1, lr=1e-6, batch_size=64)


T.register_task("test-big-linear", big_linear_task, replace=True)


class _Cells(html.parser.HTMLParser):
    """Rows of the table with id="summary"."""

    def __init__(self, table_id="summary"):
        super().__init__()
        self.rows, self._in, self._cell, self._id = [], False, None, table_id

    def handle_starttag(self, tag, attrs):
        if tag == "table" and ("id", self._id) in attrs:
            self._in = True
        elif self._in and tag == "tr":
            self.rows.append([])
        elif self._in and tag in ("td", "th"):
            self._cell = ""

    def handle_endtag(self, tag):
        if tag == "table":
            self._in = False
        elif self._in and tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append(self._cell)
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data


def _html_rows(path, table_id="summary"):
    p = _Cells(table_id)
    with open(path, encoding="utf-8") as f:
        p.feed(f.read())
    return p.rows


@pytest.fixture(scope="module")
def two_recipes(tmp_path_factory):
    out = tmp_path_factory.mktemp("cmp")
    comp = lowp.compare(task="digits-mlp", recipes="fp32,bf16", epochs=1, seed=0, out=str(out), quiet=True)
    return out, comp


def test_results_json_matches_report_and_table(two_recipes):
    out, comp = two_recipes
    for f in ("results.json", "report.html", "loss.png", "metric.png", "delta.png", "config.toml",
              "runs/fp32@0.json", "runs/bf16@0.json"):
        assert (out / f).is_file(), f
    with open(out / "results.json") as f:
        res = json.load(f)
    assert (res["task"], res["epochs"], res["seed"], res["seeds"]) == ("digits-mlp", 1, 0, [0])
    entries = {e["recipe"]: e for e in res["results"]}
    assert list(entries) == ["fp32", "bf16"]
    for e in entries.values():
        for k in ("recipe", "metric", "metric_name", "fp32_delta", "diverged", "history", "skipped_steps", "wall_s"):
            assert k in e
        assert e["metric_name"] == "accuracy" and not e["diverged"] and len(e["history"]) == 1
        assert e["metric"] == e["history"][-1]["test_metric"]
        assert e["metric"] > 0.3
    assert entries["fp32"]["fp32_delta"] == 0
    assert (entries["fp32"]["gemm_emulated"], entries["bf16"]["gemm_emulated"]) == (0.0, 1.0)  # lowp.coverage
    assert entries["bf16"]["fp32_delta"] == pytest.approx(entries["bf16"]["metric"] - entries["fp32"]["metric"])
    # the HTML table and the printed table show the numbers of results.json
    rows = _html_rows(out / "report.html")
    assert rows[0][:3] == ["recipe", "accuracy %", "Δ fp32 (pts)"] and len(rows) == 3
    text = format_table(comp).splitlines()
    for row, line in zip(rows[1:], text[1:]):
        e = entries[row[0]]
        assert float(row[1]) == pytest.approx(100 * e["metric"], abs=0.005)
        assert float(row[2]) == pytest.approx(100 * e["fp32_delta"], abs=0.005)
        assert row[3] == "-"  # one seed: no interval
        assert row[4] == ("ref" if row[0] == "fp32" else "-")
        assert row[5] == "ok" and int(row[6]) == e["skipped_steps"] and row[8] == "1"
        assert float(row[9]) == pytest.approx(100 * e["gemm_emulated"], abs=0.05)
        assert line.split() == row
    timing = _html_rows(out / "report.html", "timing")
    assert timing[0] == ["recipe", "first use s", "step ms", "× fp32 step", "total s", "process peak RSS MiB"]
    for row in timing[1:]:
        e = entries[row[0]]
        assert float(row[4]) == pytest.approx(e["wall_s"], abs=0.05)
        assert float(row[2]) == pytest.approx(1000 * e["step_s"], abs=0.05)
        assert float(row[1]) == pytest.approx(e["first_use_s"], abs=0.05)
        assert e["first_use_s"] + e["steps"] * e["step_s"] <= e["wall_s"] * 1.2
    assert timing[1][3] == "1.00"
    assert load_results(str(out)).runs == comp.runs


def test_resume_skips_finished(two_recipes, tmp_path):
    out, comp = two_recipes
    before = os.stat(out / "runs" / "fp32@0.json").st_mtime_ns
    again = lowp.compare(task="digits-mlp", recipes="fp32,bf16", epochs=1, seed=0, out=str(out), quiet=True)
    assert set(again.reused) == {"fp32@0", "bf16@0"}
    assert again.runs == comp.runs
    assert os.stat(out / "runs" / "fp32@0.json").st_mtime_ns == before
    # a third recipe trains only itself; a changed setting retrains everything
    third = lowp.compare(task="digits-mlp", recipes="fp32,bf16,fp16-amp", epochs=1, seed=0, out=str(out),
                         quiet=True)
    assert set(third.reused) == {"fp32@0", "bf16@0"}
    changed = lowp.compare(task="digits-mlp", recipes="fp32", epochs=1, seed=5, out=str(out), quiet=True)
    assert changed.reused == ()


def test_run_from_another_build_is_flagged_or_trained_again(two_recipes, tmp_path, capsys):
    src, comp = two_recipes
    out = tmp_path / "cmp"
    shutil.copytree(src, out)
    runs = out / "runs"
    bf16 = json.loads((runs / "bf16@0.json").read_text())
    assert bf16["made_by"] == provenance.made_by()  # every saved run names the build that made it
    bf16["made_by"] = {**bf16["made_by"], "source": "000000000000"}  # as if lowp's sources had changed since
    (runs / "bf16@0.json").write_text(json.dumps(bf16))
    fp32 = json.loads((runs / "fp32@0.json").read_text())
    del fp32["made_by"]  # as a run saved by a lowp that did not record its build
    (runs / "fp32@0.json").write_text(json.dumps(fp32))
    capsys.readouterr()

    again = lowp.compare(task="digits-mlp", recipes="fp32,bf16", epochs=1, seed=0, out=str(out), quiet=True)
    assert set(again.reused) == set(again.reused_other_build) == {"fp32@0", "bf16@0"}
    assert again.runs == comp.runs
    err = capsys.readouterr().err  # warned although quiet
    assert "bf16 seed 0: reusing" in err and "source 000000000000" in err
    assert "fp32 seed 0: reusing" in err and "did not record its build" in err
    assert sorted(json.loads((out / "results.json").read_text())["reused_other_build"]) == ["bf16@0", "fp32@0"]
    assert load_results(str(out)).reused_other_build == again.reused_other_build
    assert "2 of 2 runs were made by another lowp build" in (out / "report.html").read_text()

    # --rerun-stale trains both again; then every run is this build's and nothing is flagged
    assert main(["compare", "--task", "digits-mlp", "--recipes", "fp32,bf16", "--epochs", "1", "--seed", "0",
                 "--out", str(out), "--quiet", "--rerun-stale"]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["reused"] == [] and res["reused_other_build"] == []
    assert json.loads((runs / "bf16@0.json").read_text())["made_by"] == provenance.made_by()
    assert "another lowp build" not in (out / "report.html").read_text()
    # a rerun without the flag now reuses both silently
    third = lowp.compare(task="digits-mlp", recipes="fp32,bf16", epochs=1, seed=0, out=str(out), quiet=True)
    assert set(third.reused) == {"fp32@0", "bf16@0"} and third.reused_other_build == ()
    assert "reusing" not in capsys.readouterr().err


def test_diverging_recipe_reported_others_finish(tmp_path):
    cfg = tmp_path / "exp.toml"
    cfg.write_text('task = "test-big-linear"\nepochs = 1\nseed = 0\n\n[[recipes]]\nname = "fp32"\n\n[[recipes]]\n'
                   'name = "nan-out"\nbase = "fp32"\noverrides = {output = {format = "e4m3"}}\n\n'
                   '[[recipes]]\nname = "bf16"\n')
    comp = lowp.compare(config=str(cfg), out=str(tmp_path / "o"), quiet=True)
    by = {r.recipe: r for r in comp.runs}
    assert by["nan-out"].diverged and by["nan-out"].diverged_at["step"] == 0
    assert not by["fp32"].diverged and not by["bf16"].diverged
    assert len(by["bf16"].history) == 1 and by["bf16"].metric is not None and by["bf16"].error is None
    assert (tmp_path / "o" / "config.orig.toml").read_text() == cfg.read_text()
    rows = _html_rows(tmp_path / "o" / "report.html")
    assert [r[5] for r in rows[1:]] == ["ok", "diverged", "ok"]
    # the written config repeats the run: every recipe is reused
    again = lowp.compare(config=str(tmp_path / "o" / "config.toml"), quiet=True)
    assert set(again.reused) == {"fp32@0", "nan-out@0", "bf16@0"}


@pytest.mark.parametrize("kw,match", [
    (dict(task="nope"), "unknown task"),
    (dict(recipes="fp32,nope"), "unknown recipe"),
    (dict(epochs=0), "epochs"),
])
def test_bad_input_writes_nothing(tmp_path, kw, match):
    out = tmp_path / "o"
    args = dict(task="digits-mlp", recipes="fp32", epochs=1, out=str(out), quiet=True) | kw
    with pytest.raises(ValueError, match=match):
        lowp.compare(**args)
    assert not out.exists()


def test_output_under_a_file_is_an_error(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(ValueError, match="cannot write to output directory"):
        lowp.compare(task="digits-mlp", recipes="fp32", epochs=1, out=str(tmp_path / "f" / "sub"), quiet=True)


def test_numerics_section(two_recipes, tmp_path):
    _, comp = two_recipes
    recs = [{"layer": l, "role": ro, "step": s, "underflow": u, "overflow": 0.0, "subnormal": 0.0, "sqnr_db": 30.0,
             "amax": 1.0}
            for s in (0, 10) for l, ro, u in [("0", "grad_output", 0.5), ("2", "grad_output", 0.1),
                                             ("0", "input", 0.0)]]
    layers, roles, m = numerics_matrix(recs, "underflow")
    assert layers == ["0", "2"] and roles == ["input", "grad_output"]
    assert m[0] == [0.0, 0.5] and m[1][1] == 0.1 and m[1][0] != m[1][0]  # NaN where absent
    path = render(comp, str(tmp_path), numerics={"bf16": recs})
    page = open(path).read()
    assert "Numerics per layer and role" in page and "numerics-bf16.png" in page
    assert (tmp_path / "numerics-bf16.png").stat().st_size > 1000
    assert "Numerics" not in open(render(comp, str(tmp_path / "plain"), numerics={})).read()


def test_numerics_collected_into_results(tmp_path):
    tb = pytest.importorskip("torch.utils.tensorboard") and str(tmp_path / "tb")
    comp = lowp.compare(task="digits-mlp", recipes="fp32,bf16", epochs=1, seed=0, out=str(tmp_path / "o"),
                        numerics_every=20, tensorboard=tb, quiet=True)
    assert {f for f in os.listdir(os.path.join(tb, "bf16", "seed0"))} and os.listdir(os.path.join(tb, "fp32", "seed0"))
    tmp_path = tmp_path / "o"
    recs = comp.run("bf16").numerics
    assert recs and {"layer", "role", "step", "underflow", "overflow", "sqnr_db"} <= set(recs[0])
    assert {r["step"] for r in recs} == {0, 20, 40}
    assert not comp.run("fp32").numerics  # nothing is quantized under fp32
    assert (tmp_path / "numerics-bf16.png").is_file()
    json.loads((tmp_path / "results.json").read_text())  # strict JSON (no NaN/Inf)


def test_failed_run_is_retried_not_reused(tmp_path, monkeypatch):
    monkeypatch.setattr(T, "_REGISTRY", dict(T._REGISTRY))
    class FailsInTraining(nn.Linear):
        """Passes the 2-sample dry run of the validation pass, fails on a real batch."""

        def forward(self, x):
            if x.shape[0] > 2:
                raise RuntimeError("boom")
            return super().forward(x)

    def broken():
        return T.Task("test-broken", lambda: FailsInTraining(64, 10), T.digits_data, epochs=1)
    T.register_task("test-broken", broken, replace=True)
    first = lowp.compare(task="test-broken", recipes="fp32", seed=0, out=str(tmp_path), quiet=True)
    assert first.run("fp32").status == "error" and first.run("fp32").metric is None
    again = lowp.compare(task="test-broken", recipes="fp32", seed=0, out=str(tmp_path), quiet=True)
    assert again.reused == ()
