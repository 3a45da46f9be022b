"""`lowp recipes`: the table, --json, and a one-line error on a bad name."""
import json

from lowp.cli import main


def test_table_json_and_error(capsys):
    assert main(["recipes"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split()[:4] == ["name", "roles", "accumulation", "master"]
    assert "fp16-169/chunk 64" in out and "Wang et al. 2018" in out
    assert main(["recipes", "--json", "bf16"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["input"]["format"] == "bf16"
    assert main(["recipes", "nope"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lowp: error: unknown recipe 'nope'") and err.count("\n") == 1
