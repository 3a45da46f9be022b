"""``lowp ptq`` end to end on digits-mlp (few epochs) and its one-line errors."""
import json
import os

import pytest

from lowp.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")  # restored after each test


def test_ptq_cli_int8_and_fgq(tmp_path, capsys):
    out = str(tmp_path / "run")
    assert main(["ptq", "--task", "digits-mlp", "--method", "int8", "--epochs", "3", "--out", out,
                 "--calibration", "minmax", "entropy"]) == 0
    res = json.load(open(os.path.join(out, "results.json")))
    assert len(res["configs"]) == 2
    # same convention as lowp compare's results.json: the metric is a fraction in [0, 1]
    assert res["metric_name"] == "accuracy" and 0.5 < res["fp32_metric"] <= 1.0
    for c in res["configs"]:
        for k in ("method", "options", "metric", "fp32_metric", "fp32_delta", "weight_bits", "size_bytes"):
            assert k in c
        assert 0.0 <= c["metric"] <= 1.0 and c["fp32_delta"] == pytest.approx(c["metric"] - c["fp32_metric"])
        assert abs(c["fp32_delta"]) <= 0.02 and c["weight_bits"] == 8
        assert 0.97 <= c["fp32_agreement"] <= 1.0 and 0.0 <= c["output_rel_error"] < 0.01
    assert os.path.getsize(os.path.join(out, "ptq.png")) > 1000
    # the table (results.md and the terminal) shows the same numbers in percent / percentage points
    md = open(os.path.join(out, "results.md")).read()
    printed = capsys.readouterr().out
    assert "| fp32 |" in md and "accuracy %" in md
    rows = {r.split("|")[1].strip(): r.split("|") for r in md.splitlines() if r.startswith("| ")}
    assert float(rows["fp32"][2]) == pytest.approx(100 * res["fp32_metric"], abs=0.005)
    for c in res["configs"]:
        assert float(rows[c["label"]][2]) == pytest.approx(100 * c["metric"], abs=0.005)
        assert float(rows[c["label"]][3]) == pytest.approx(100 * c["fp32_delta"], abs=0.005)
        assert "|".join(rows[c["label"]]) in printed
    # second run loads the cached FP32 model
    assert main(["ptq", "--method", "fgq", "--group", "4", "64", "--edge-bits", "0", "--epochs", "3",
                 "--out", out]) == 0
    assert "loaded FP32 model" in capsys.readouterr().out
    res = json.load(open(os.path.join(out, "results.json")))
    fr = [c["mult_fraction_replaced"] for c in res["configs"]]
    assert 0 < fr[0] < fr[1] < 1
    # smaller groups: closer to the FP32 model's outputs
    assert res["configs"][0]["output_rel_error"] < res["configs"][1]["output_rel_error"]
    # more residual terms: the outputs approach the FP32 model's (error non-increasing, agreement reached)
    assert main(["ptq", "--method", "ternary-residual", "--terms", "1", "2", "3", "4", "--group", "4",
                 "--edge-bits", "0", "--epochs", "3", "--out", out]) == 0
    res = json.load(open(os.path.join(out, "results.json")))
    errs = [c["output_rel_error"] for c in res["configs"]]
    assert all(b <= a for a, b in zip(errs, errs[1:])) and errs[-1] < errs[0] / 100
    assert res["configs"][-1]["fp32_agreement"] >= 0.99


def test_ptq_cli_errors(tmp_path, capsys):
    assert main(["ptq", "--task", "nope", "--method", "int8", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("lowp: error: unknown task 'nope'") and "\n" not in err
    with pytest.raises(SystemExit) as e:
        main(["ptq", "--method", "int9", "--out", str(tmp_path)])
    assert e.value.code == 2
