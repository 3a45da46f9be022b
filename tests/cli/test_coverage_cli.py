import json

from lowp.cli import main


def test_coverage_cli_table_and_json(capsys):
    assert main(["coverage", "--task", "digits-mlp", "--recipe", "bf16,fp8-e5m2", "--batch", "4"]) == 0
    out = capsys.readouterr().out
    assert "GEMM FLOPs emulated: 100.0%" in out and "recipe fp8-e5m2" in out and "exempt" in out
    assert main(["coverage", "--task", "digits-mlp", "--recipe", "bf16", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d[0]["emulated_fraction"] == 1.0 and d[0]["rows"]


def test_coverage_cli_errors(capsys):
    assert main(["coverage", "--task", "digits-mlp", "--recipe", "fp9"]) == 2
    assert "unknown recipe 'fp9'" in capsys.readouterr().err
    assert main(["coverage", "--task", "digits-mlp", "--recipe", "bf16", "--batch", "0"]) == 2
    assert "--batch must be >= 1, got 0" in capsys.readouterr().err
    assert main(["coverage", "--task", "nope", "--recipe", "bf16"]) == 2
