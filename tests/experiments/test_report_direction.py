"""The compare table, ranking, verdict lines and plots of a lower-is-better metric (a validation loss in
nats/token), against the same of a higher-is-better accuracy: Δ sign, sort order and wording."""
import dataclasses
import json

import pytest

from lowp.experiments.compare import Comparison, _with_deltas, load_results
from lowp.experiments.report import format_summary, format_table, ranked, render, summary_lines, table_rows
from lowp.experiments.train import RunResult


def _run(name, metric, diverged=False, error=None):
    hist = ({"epoch": 1, "train_loss": 2.5, "test_metric": metric * 1.1}, {"epoch": 2, "train_loss": 2.0,
                                                                          "test_metric": metric})
    return RunResult(recipe=name, metric=None if error else metric, metric_name="val_loss", diverged=diverged,
                     history=hist, skipped_steps=0, wall_s=1.0, steps=10, settings={}, recipe_spec={}, error=error)


def loss_comparison(**kw):
    runs = _with_deltas([_run("fp32", 2.00), _run("bf16", 2.01), _run("fp8-a", 2.10), _run("fp8-b", 1.95),
                         _run("broken", 0.0, error="RuntimeError: x"), _run("nan", 1.5, diverged=True)])
    return Comparison("lm", 0, 2, 1e-3, 32, "val_loss", runs, higher_is_better=False, metric_unit="nats/token",
                      **kw)


def test_delta_sign_is_metric_minus_fp32():
    comp = loss_comparison()
    d = {r.recipe: r.fp32_delta for r in comp.runs}
    assert d["bf16"] == pytest.approx(0.01) and d["fp8-a"] == pytest.approx(0.10) and d["fp8-b"] == pytest.approx(-0.05)
    rows = {r["recipe"]: r for r in table_rows(comp)}
    assert rows["bf16"]["metric"] == "2.0100" and rows["bf16"]["delta_fp32"] == "+0.0100"
    assert rows["bf16"]["delta_rel"] == "+0.50" and rows["fp8-b"]["delta_rel"] == "-2.50"
    head = format_table(comp).splitlines()[0]
    assert "val_loss (nats/token) ↓" in head and "Δ fp32 (nats/token)" in head and "Δ fp32 %" in head


def test_ranking_lowest_first_for_a_loss():
    comp = loss_comparison()
    assert [r.recipe for r in ranked(comp)] == ["fp8-b", "fp32", "bf16", "fp8-a", "nan", "broken"]


def test_wording_within_better_worse():
    lines = summary_lines(loss_comparison())
    assert lines[0] == "ranking, best first (lower val_loss is better): fp8-b, fp32, bf16, fp8-a, nan (diverged)"
    assert "within 1% of fp32: bf16 (0.50% worse)" in lines
    assert "better than fp32 by more than 1%: fp8-b (2.50%)" in lines  # not the diverged run
    assert "worse than fp32 by more than 1%: fp8-a (5.00%)" in lines
    assert summary_lines(loss_comparison(), tol=0.03)[1] == ("within 3% of fp32: bf16 (0.50% worse), "
                                                             "fp8-b (2.50% better)")


def test_higher_is_better_accuracy_mirrors():
    runs = _with_deltas([_run("fp32", 0.90), _run("bf16", 0.905), _run("fp8", 0.85)])
    comp = Comparison("acc", 0, 2, 0.1, 32, "accuracy", runs)
    assert [r.recipe for r in ranked(comp)] == ["bf16", "fp32", "fp8"]
    lines = summary_lines(comp)
    assert "within 1 point of fp32: bf16 (0.50 points better)" in lines
    assert "worse than fp32 by more than 1 point: fp8 (5.00 points)" in lines
    rows = {r["recipe"]: r for r in table_rows(comp)}
    assert rows["fp8"]["delta_fp32"] == "-5.00" and "delta_rel" not in format_table(comp)
    assert format_table(comp).splitlines()[0].split()[:3] == ["recipe", "accuracy", "%"]


def test_report_and_results_json_carry_the_direction(tmp_path):
    comp = loss_comparison(out=str(tmp_path))
    (tmp_path / "results.json").write_text(json.dumps(comp.to_dict()))
    back = load_results(str(tmp_path))
    assert back.higher_is_better is False and back.metric_unit == "nats/token"
    render(back, str(tmp_path))
    html = (tmp_path / "report.html").read_text()
    assert "lower is better" in html and "in percent of FP32" in html
    assert "within 1% of fp32: bf16 (0.50% worse)" in html
    for f in ("loss.png", "metric.png", "delta.png"):
        assert (tmp_path / f).stat().st_size > 1000
    assert format_summary(back).splitlines() == summary_lines(back)


# ---- several seeds of the language-model task (tiny-gpt: validation loss in nats/token, lower is better)

def _lm_comparison():
    """fp32, a twin of it, a recipe 0.05 nats worse and one 0.03 nats better on every seed (plus seed jitter)."""
    jitter = {0: 0.0, 1: 0.004, 2: -0.003}
    base = {0: 2.40, 1: 2.43, 2: 2.38}
    offs = {"fp32": 0.0, "fp32-twin": 0.0, "fp8-worse": 0.05, "fp8-better": -0.03}
    runs = [dataclasses.replace(_run(n, base[s] + off + (jitter[s] if off else 0.0)), settings={"seed": s})
            for n, off in offs.items() for s in (0, 1, 2)]
    return Comparison("tiny-gpt", 0, 2, 3e-3, 32, "val_loss", tuple(_with_deltas(runs)), higher_is_better=False,
                      metric_unit="nats/token")


def test_lm_seeds_delta_sign_sorting_wording():
    comp = _lm_comparison()
    rows = {r["recipe"]: r for r in table_rows(comp)}
    assert rows["fp8-worse"]["delta_fp32"].startswith("+0.05") and rows["fp8-worse"]["verdict"] == "worse"
    assert rows["fp8-better"]["delta_fp32"].startswith("-0.0") and rows["fp8-better"]["verdict"] == "better"
    assert rows["fp32-twin"]["verdict"] == "noise" and rows["fp32-twin"]["delta_fp32"] == "+0.0000"
    assert rows["fp8-worse"]["delta_rel"].startswith("+2.")  # in percent of FP32's mean loss
    assert [s.recipe for s in ranked(comp)] == ["fp8-better", "fp32", "fp32-twin", "fp8-worse"]
    lines = summary_lines(comp)
    assert lines[0] == "ranking, best first (lower val_loss is better): fp8-better, fp32, fp32-twin, fp8-worse"
    assert lines[1].startswith("better than fp32 beyond seed noise (3 seeds, paired t, 95%): fp8-better (-0.0")
    assert lines[2].startswith("worse than fp32 beyond seed noise (3 seeds, paired t, 95%): fp8-worse (+0.05")
    assert lines[3].startswith("not distinguishable from fp32") and "fp32-twin (+0.0000 nats/token" in lines[3]
    head = format_table(comp).splitlines()[0]
    assert "val_loss (nats/token) ↓ mean ± sd" in head and "Δ fp32 (nats/token)" in head


def test_lm_task_runs_and_carries_the_direction(tmp_path):
    """A real (two-step) tiny-gpt comparison over two seeds: the task's direction reaches results.json, the table
    and the report, and Δ is metric − FP32's metric of the same seed."""
    import lowp
    from lowp.experiments import tasks as T
    import torch

    def short():  # one step, evaluated on the first 32 validation windows
        t = T.get_task("tiny-gpt")
        full = t.load_data

        def data():
            d = full()
            return dataclasses.replace(d, test=torch.utils.data.Subset(d.test, range(32)))
        return dataclasses.replace(t, name="test-tiny-gpt-short", steps_per_epoch=1, epochs=1, load_data=data)

    T.register_task("test-tiny-gpt-short", short, replace=True)
    comp = lowp.compare(task="test-tiny-gpt-short", recipes="fp32,bf16", seeds="0,1", out=str(tmp_path),
                        quiet=True, numerics=False)
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["higher_is_better"] is False and res["metric_unit"] == "nats/token" and res["metric_name"] == "val_loss"
    fp = {r.seed: r.metric for r in comp.runs_of("fp32")}
    assert [r.fp32_delta for r in comp.runs_of("bf16")] == pytest.approx([r.metric - fp[r.seed]
                                                                          for r in comp.runs_of("bf16")], abs=1e-9)
    order = [s.recipe for s in ranked(comp)]
    assert order == sorted(order, key=lambda n: next(s.metric for s in comp.summaries() if s.recipe == n))
    assert "lower is better" in (tmp_path / "report.html").read_text()
