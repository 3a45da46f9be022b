"""Bad-value matrices for every verb (reliability probes): each bad input ends with exactly one line
``lowp...: error: ...`` naming the value, exit status 2, and nothing written (no output folder, no cache, no
results). Run in process through ``lowp.cli.main`` (a traceback would fail the test with the exception)."""
from __future__ import annotations

import json
import os

import pytest

from lowp.cli import main

# files the probes read: name -> content
INPUTS = {
    "margin.toml": 'recipes = [{name = "x", base = "fp8-hybrid", overrides = {input = {margin = "abc"}}}]\n',
    "margin_nan.toml": 'recipes = [{name = "x", base = "fp8-hybrid", overrides = {input = {margin = nan}}}]\n',
    "acts.toml": 'recipes = [{name = "x", base = "fp32", overrides = {activations = 5}}]\n',
    "acts_name.toml": 'recipes = [{name = "x", base = "fp32", overrides = {activations = "relu6"}}]\n',
    "transforms.toml": 'recipes = [{name = "x", base = "fp32", overrides = {transforms = [5]}}]\n',
    "transform_name.toml": 'recipes = [{name = "x", base = "fp32", overrides = {transforms = ["nope"]}}]\n',
    "exempt.toml": 'recipes = [{name = "x", base = "fp32", overrides = {exempt_first_last = "false"}}]\n',
    "saturate.toml": 'recipes = [{name = "x", base = "fp8-hybrid", overrides = {input = {saturate = "false"}}}]\n',
    "format.toml": 'recipes = [{name = "x", base = "fp32", overrides = {input = {format = "e9m9"}}}]\n',
    "scale.toml": 'recipes = [{name = "x", base = "fp32", overrides = {loss_scaling = {kind = "static", '
                  'init_scale = -1.0}}}]\n',
    "chunk.toml": 'recipes = [{name = "x", base = "fp32", overrides = {chunk = 0}}]\n',
    "exempt_nope.toml": 'recipes = [{name = "x", base = "fp32", overrides = {exempt = ["nope*"]}}]\n',
    "rand_bits.toml": 'recipes = [{name = "x", base = "fp32", overrides = {input = {format = "e4m3", '
                      'rounding = "stochastic", rand_bits = 99}}}]\n',
    "spec_str.toml": 'recipes = [{name = "x", base = "fp32", overrides = {input = "nope"}}]\n',
    "field.toml": 'recipes = [{name = "x", base = "fp32", overrides = {inptu = "bf16"}}]\n',
    "newline.toml": 'recipes = [{name = "a\\nb", base = "fp32"}]\n',
    "deep.toml": "a = " + "[" * 3000 + "]" * 3000 + "\n",
    "malformed.toml": "epochs = = 3\n",
    "unknown_key.toml": "epoch = 3\n",
    "lr_str.toml": 'lr = "abc"\n',
    "seed_str.toml": 'seed = "3"\n',
    "epochs_float.toml": "epochs = 1.5\n",
    "deep.json": "[" * 100000,
    "name5.json": json.dumps({"name": 5}),
    "nan_margin.json": '{"name": "j", "input": {"format": "e4m3", "scaling": "current", "margin": NaN}}',
    "str_bool.json": json.dumps({"name": "j", "exempt_first_last": "false"}),
    "list.json": "[1, 2]",
    "latin1.json": b'{"name": "caf\xe9"}',
    "a_file": "x",
}

C = ["compare", "--task", "digits-mlp", "--recipes", "fp32", "--epochs", "1", "--out", "OUT", "--quiet"]


def _has_tensorboard() -> bool:
    import importlib.util

    return importlib.util.find_spec("tensorboard") is not None


def _compare(*extra, recipes=None):
    a = list(C)
    if recipes is not None:
        a[a.index("--recipes") + 1] = recipes
    return a + list(extra)


def _config(name):
    a = [x for x in C if x not in ("--recipes", "fp32")]
    return a + ["--config", name]


P = ["ptq", "--task", "digits-mlp", "--method", "int8", "--epochs", "1", "--out", "OUT"]
A = ["accum-bits", "--length", "100"]

CASES = {
    "compare": [
        (_compare("--seed", "18446744073709551616"), "18446744073709551616"),
        (_compare("--seed", "-1"), "-1"),
        (_compare("--nproc", "3", "--batch-size", "2"), "nproc 3"),
        (_compare("--batch-size", "99999"), "99999"),
        (_compare("--batch-size", "0"), "batch_size"),
        (_compare("--epochs", "0"), "epochs"),
        (_compare("--epochs", "abc"), "abc"),
        (_compare("--lr", "nan"), "nan"),
        (_compare("--lr", "-1"), "-1"),
        (_compare("--lr", "inf"), "inf"),
        (_compare("--jobs", "0"), "jobs"),
        (_compare("--numerics-every", "0"), "numerics_every"),
        (_compare("--seeds", "0,x"), "'x'"),
        (_compare("--seeds", "1,1"), "duplicate seed"),
        (_compare("--seed", "1", "--seeds", "2"), "either seed or seeds"),
        (_compare("--tensorboard", "deep.json"), "deep.json" if _has_tensorboard() else "pip install tensorboard"),
        (_compare("--task", "nope"), "nope"),
        (_compare(recipes="fp32,nope"), "nope"),
        (_compare(recipes="fp32,fp32"), "duplicate"),
        (_compare(recipes=","), "no recipes"),
        (_compare(recipes="a\nb"), "a\\nb"),
        (_compare("--grad-hook", "adacomp"), "adacomp"),
        (_compare("--grad-hook", "bogus", "--nproc", "2"), "bogus"),
        (_compare("--config", "missing.toml"), "missing.toml"),
        (_compare(recipes="deep.json"), "nested too deeply"),
        (_compare(recipes="name5.json"), "5"),
        (_compare(recipes="nan_margin.json"), "nan"),
        (_compare(recipes="str_bool.json"), "'false'"),
        (_compare(recipes="list.json"), "list"),
    ] + [(_config(f), v) for f, v in [
        ("margin.toml", "'abc'"), ("margin_nan.toml", "nan"), ("acts.toml", "5"), ("acts_name.toml", "relu6"),
        ("transforms.toml", "[5]"), ("transform_name.toml", "nope"), ("exempt.toml", "'false'"),
        ("saturate.toml", "'false'"), ("format.toml", "e9m9"), ("scale.toml", "-1.0"), ("chunk.toml", "chunk"),
        ("field.toml", "inptu"), ("exempt_nope.toml", "'nope*'"), ("rand_bits.toml", "99"),
        ("spec_str.toml", "'nope'"), ("newline.toml", "a\\nb"), ("deep.toml", "nested too deeply"),
        ("malformed.toml", "malformed"), ("unknown_key.toml", "epoch"), ("lr_str.toml", "'abc'"),
        ("seed_str.toml", "'3'"), ("epochs_float.toml", "1.5")]],
    "ptq": [
        (P + ["--asymmetric", "2"], "'2'"),
        (P + ["--act-bits", "99"], "99"),
        (P + ["--weight-bits", "99"], "99"),
        (P[:4] + ["fgq"] + P[5:] + ["--edge-bits", "-3"], "-3"),
        (P[:4] + ["fgq"] + P[5:] + ["--edge-bits", "99"], "99"),
        (P + ["--seed", str(2**64)], str(2**64)),
        (P + ["--seed", "-1"], "-1"),
        (P + ["--calib-samples", "0"], "0"),
        (P + ["--task", "nope"], "nope"),
        (P + ["--epochs", "0"], "0"),
        (P[:4] + ["int9"] + P[5:], "int9"),
        (P[:4] + ["fgq"] + P[5:] + ["--group", "0"], "0"),
        (P[:4] + ["cluster"] + P[5:] + ["--cluster", "-2"], "-2"),
        (P[:4] + ["ternary-residual"] + P[5:] + ["--budget-bytes", "0"], "0"),
        (P[:-1] + ["a_file/sub"], "a_file"),
        (P[:-1] + ["a_file"], "a_file"),
    ],
    "accum-bits": [
        (A + ["--cutoff", "-1"], "-1"),
        (A + ["--cutoff", "nan"], "nan"),
        (A + ["--cutoff", "1"], "1"),
        (A + ["--criterion", "relative", "--eps", "2"], "2"),
        (A + ["--eps", "0"], "0"),
        (A + ["--eps", "nan"], "nan"),
        (["accum-bits", "--task", "digits-mlp", "--batch", "-5"], "-5"),
        (["accum-bits", "--task", "digits-mlp", "--batch", "0"], "0"),
        (["accum-bits", "--task", "digits-mlp", "--batch", "99999"], "99999"),
        (A + ["--batch", "4"], "--batch needs --task"),
        (["accum-bits", "--length", "0"], "0"),
        (["accum-bits", "--length", str(10**30)], str(10**30)),
        (["accum-bits"], "exactly one"),
        (A + ["--task", "digits-mlp"], "exactly one"),
        (A + ["--product-man", "99"], "99"),
        (A + ["--chunk", "0"], "0"),
        (["accum-bits", "--task", "nope"], "nope"),
    ],
    "recipes": [
        (["recipes", "nope"], "nope"),
        (["recipes", "deep.json"], "nested too deeply"),
        (["recipes", "name5.json"], "5"),
        (["recipes", "nan_margin.json"], "nan"),
        (["recipes", "str_bool.json"], "'false'"),
        (["recipes", "list.json"], "list"),
        (["recipes", "latin1.json"], "latin1.json"),
    ],
    "formats": [
        (["formats", "--bogus"], "--bogus"),
    ],
    "report": [
        (["report", "no-such-dir"], "no-such-dir"),
        (["report", "deep.json"], "has no results.json"),
    ],
    "coverage": [
        (["coverage", "--task", "digits-mlp", "--recipe", "nope"], "nope"),
        (["coverage", "--task", "nope", "--recipe", "bf16"], "nope"),
        (["coverage", "--task", "digits-mlp", "--recipe", "bf16", "--batch", "0"], "--batch"),
        (["coverage", "--task", "digits-mlp", "--recipe", ","], "','"),
        (["coverage", "--task", "digits-mlp", "--recipe", "deep.json"], "nested too deeply"),
        (["coverage", "--task", "no_such_module:f", "--recipe", "bf16"], "no_such_module"),
    ],
}

PARAMS = [pytest.param(verb, argv, must, id=f"{verb}-{i}") for verb, cases in CASES.items()
          for i, (argv, must) in enumerate(cases)]


@pytest.fixture
def inputs_dir(tmp_path, monkeypatch):
    for name, text in INPUTS.items():
        (tmp_path / name).write_bytes(text if isinstance(text, bytes) else text.encode())
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("verb,argv,must", PARAMS)
def test_bad_value_one_line_exit_2_nothing_written(inputs_dir, capsys, verb, argv, must):
    before = sorted(os.listdir(inputs_dir))
    try:
        rc = main(argv)
    except SystemExit as e:  # argparse usage errors
        rc = e.code
    out, err = capsys.readouterr()
    assert rc == 2, (rc, err)
    assert err.count("\n") == 1 and err.startswith("lowp") and ": error: " in err, err
    assert must in err, err
    assert "Traceback" not in err + out
    assert sorted(os.listdir(inputs_dir)) == before  # nothing written: no OUT folder, no cache, no results


def test_every_verb_is_probed():
    from lowp.cli import COMMANDS

    assert {c.replace("_", "-") for c in COMMANDS} == set(CASES)
