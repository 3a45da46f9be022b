"""``lowp accum-bits``: JSON shape, the table, per-GEMM lengths of a task, one-line errors."""
import json

import pytest

from lowp.cli import main


def test_length_json_shape(capsys):
    assert main(["accum-bits", "--length", "1024", "--product-man", "5", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert isinstance(d["min_acc_bits"], int) and 1 <= d["min_acc_bits"] <= 23
    assert sorted(map(int, d["vrr"])) == list(range(1, 24))
    assert all(isinstance(v, float) for v in d["vrr"].values())
    assert d["retained"][str(d["min_acc_bits"])] > d["retained"]["1"]


def test_length_table_and_chunk(capsys):
    assert main(["accum-bits", "--length", "4096", "--product-man", "5", "--chunk", "64"]) == 0
    out = capsys.readouterr().out
    assert "<- min" in out and "minimum accumulator mantissa bits" in out
    main(["accum-bits", "--length", "4096", "--json"])
    seq = json.loads(capsys.readouterr().out)["min_acc_bits"]
    main(["accum-bits", "--length", "4096", "--chunk", "64", "--json"])
    assert json.loads(capsys.readouterr().out)["min_acc_bits"] < seq


def test_task_lists_every_gemm_with_its_lengths(capsys):
    assert main(["accum-bits", "--task", "digits-mlp", "--batch", "32", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    rows = {(r["layer"], r["pass"]): r["n"] for r in d["gemms"]}
    first = d["gemms"][0]["layer"]
    assert rows[(first, "forward")] == 64 and rows[(first, "weight_grad")] == 32   # digits: 8x8 inputs, batch 32


@pytest.mark.parametrize("argv", [["accum-bits"], ["accum-bits", "--length", "8", "--task", "digits-mlp"],
                                  ["accum-bits", "--length", "0"], ["accum-bits", "--task", "nope"],
                                  ["accum-bits", "--length", "8", "--product-man", "40"]])
def test_bad_input_one_line_error(argv, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("lowp: error:") and "\n" not in err
