"""Recipe, TensorSpec and LossScaling refuse values of the wrong type with one-line ValueErrors naming the value
(reliability probes): string booleans, NaN or non-numeric margins, non-string names and lists, names with
control characters, too deeply nested JSON."""
import json

import pytest

from lowp.recipes import get_recipe
from lowp.recipes.recipe import LossScaling, Recipe, TensorSpec


@pytest.mark.parametrize("kw, match", [
    (dict(saturate="false"), "saturate must be True or False, got 'false'"),
    (dict(saturate=1), "saturate must be True or False, got 1"),
    (dict(margin=float("nan")), "margin .* got nan"),
    (dict(margin=float("inf")), "margin .* got inf"),
    (dict(margin="abc"), "margin .* got 'abc'"),
    (dict(margin=1000), "margin .* got 1000"),
    (dict(history=0), "history .* got 0"),
    (dict(history=2.5), "history .* got 2.5"),
    (dict(scaling=5), "unknown scaling 5"),
    (dict(rounding=5), "rounding .* got 5"),
])
def test_tensor_spec_refuses(kw, match):
    with pytest.raises(ValueError, match=match):
        TensorSpec("e4m3", **kw)


def test_tensor_spec_accepts_real_values():
    assert TensorSpec("e4m3", saturate=True, margin=1).saturate is True
    assert TensorSpec("e4m3", margin=-2.5).margin == -2.5


@pytest.mark.parametrize("kw, match", [
    (dict(name=5), "non-empty string, got 5"),
    (dict(name=""), "non-empty string"),
    (dict(name="a\nb"), "control characters"),
    (dict(exempt_first_last="false"), "exempt_first_last must be True or False, got 'false'"),
    (dict(exempt="conv1"), "exempt must be a list of strings, got 'conv1'"),
    (dict(transforms=[5]), r"transforms must be a list of strings, got \[5\]"),
    (dict(accumulate=5), "accumulate must be a format or accumulator name"),
    (dict(loss_scaling=5), "loss_scaling must be"),
    (dict(loss_scaling={"kind": "static", "init_scale": float("nan")}), "init_scale .* got nan"),
    (dict(loss_scaling={"kind": "dynamic", "growth_interval": 0}), "growth_interval .* got 0"),
    (dict(loss_scaling={"kind": "dynamic", "bogus": 1}), "unknown loss scaling field"),
    (dict(input={"format": "e4m3", "bogus": 1}), "unknown tensor spec field"),
    (dict(source=5), "source must be a string"),
])
def test_recipe_refuses(kw, match):
    with pytest.raises(ValueError, match=match):
        Recipe(**kw)


@pytest.mark.parametrize("text, match", [
    ('{"name": 5}', "got 5"),
    ('{"name": "x", "activations": 5}', "activations must be a transform name .* got 5"),
    ('{"name": "x", "input": {"format": "e4m3", "margin": NaN}}', "got nan"),
    ('{"name": "x", "exempt_first_last": "false"}', "'false'"),
    ('{"name": "x", "input": {"format": "e4m3", "saturate": "no"}}', "'no'"),
    ("[" * 100000, "nested too deeply"),
    ('{"name": ' * 50000, "nested too deeply|malformed"),
    ("[1, 2]", "JSON object"),
    ("{", "malformed recipe JSON"),
])
def test_from_json_refuses(text, match):
    with pytest.raises(ValueError, match=match) as e:
        Recipe.from_json(text)
    assert "\n" not in str(e.value)


def test_library_recipes_round_trip():
    for name in ("fp32", "bf16", "fp8-hybrid", "fp8-ibm", "mxfp4"):
        r = get_recipe(name)
        assert Recipe.from_json(r.to_json()) == r
        assert json.loads(r.to_json())["name"] == name
    assert LossScaling("dynamic").kind == "dynamic"
