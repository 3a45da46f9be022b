"""``lowp ptq`` end to end on digits-mlp (few epochs) and its one-line errors."""
import json
import os

import pytest
import torch

from lowp.cli import main

torch.set_num_threads(1)


def test_ptq_cli_int8_and_fgq(tmp_path, capsys):
    out = str(tmp_path / "run")
    assert main(["ptq", "--task", "digits-mlp", "--method", "int8", "--epochs", "3", "--out", out,
                 "--calibration", "minmax", "entropy"]) == 0
    res = json.load(open(os.path.join(out, "results.json")))
    assert len(res["configs"]) == 2
    for c in res["configs"]:
        for k in ("method", "options", "metric", "fp32_metric", "weight_bits", "size_bytes"):
            assert k in c
        assert abs(c["metric"] - c["fp32_metric"]) <= 2.0 and c["weight_bits"] == 8
    assert os.path.getsize(os.path.join(out, "ptq.png")) > 1000
    assert "| fp32 |" in open(os.path.join(out, "results.md")).read()
    # second run loads the cached FP32 model
    assert main(["ptq", "--method", "fgq", "--group", "4", "64", "--edge-bits", "0", "--out", out]) == 0
    assert "loaded FP32 model" in capsys.readouterr().out
    res = json.load(open(os.path.join(out, "results.json")))
    fr = [c["mult_fraction_replaced"] for c in res["configs"]]
    assert 0 < fr[0] < fr[1] < 1


def test_ptq_cli_errors(tmp_path, capsys):
    assert main(["ptq", "--task", "nope", "--method", "int8", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("lowp: error: unknown task 'nope'") and "\n" not in err
    with pytest.raises(SystemExit) as e:
        main(["ptq", "--method", "int9", "--out", str(tmp_path)])
    assert e.value.code == 2
