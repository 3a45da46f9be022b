"""Named recipes: present, documented, JSON round-trip, derived with overrides, loaded from a JSON path."""
import json

import pytest

import lowp
from lowp.recipes.library import RECIPES

REQUIRED = ["fp32", "bf16", "fp16-amp", "fp8-e5m2", "fp8-e5m2-noscale", "fp8-hybrid", "fp8-ibm", "int16-dfp",
            "fixed16-sr", "mxfp8", "mxfp4"]


def test_names():
    assert lowp.recipe_names()[: len(REQUIRED)] == REQUIRED


@pytest.mark.parametrize("name", list(RECIPES))
def test_json_round_trip_and_docs(name):
    r = lowp.get_recipe(name)
    assert r.name == name and r.source and r.notes
    s = r.to_json()
    assert lowp.Recipe.from_json(s) == r
    assert lowp.Recipe.from_json(json.dumps(json.loads(s))) == r


def test_paper_choices():
    e5 = lowp.get_recipe("fp8-e5m2")
    assert e5.exempt_first_last and e5.loss_scaling.kind == "enhanced"
    assert e5.grad_output.rounding == "stochastic" and e5.input.rounding == "nearest"
    assert e5.master.format == "fp16" and e5.master.rounding == "stochastic"
    assert lowp.get_recipe("fp8-e5m2-noscale") == e5.replace(name="fp8-e5m2-noscale", loss_scaling="none",
                                                             notes=lowp.get_recipe("fp8-e5m2-noscale").notes)
    ibm = lowp.get_recipe("fp8-ibm")
    assert (ibm.accumulate, ibm.chunk, ibm.input.format, ibm.master.format) == ("fp16-169", 64, "fp8-152", "fp16-169")
    hy = lowp.get_recipe("fp8-hybrid")
    assert (hy.input.format, hy.input.scaling, hy.grad_output.format) == ("e4m3", "current", "e5m2")
    assert lowp.get_recipe("fp32") == lowp.Recipe(name="fp32", source=RECIPES["fp32"].source,
                                                  notes=RECIPES["fp32"].notes)


def test_json_path_and_unknown(tmp_path):
    p = tmp_path / "mine.json"
    mine = lowp.get_recipe("bf16").replace(name="mine", grad_output={"rounding": "stochastic"})
    p.write_text(mine.to_json())
    assert lowp.get_recipe(str(p)) == mine and lowp.get_recipe(p) == mine
    with pytest.raises(ValueError, match=r"unknown recipe 'nope'; known recipes: fp32, bf16, fp16-amp"):
        lowp.get_recipe("nope")
    with pytest.raises(ValueError, match="unknown recipe field"):
        lowp.Recipe.from_dict({"name": "x", "inptu": "bf16"})
    with pytest.raises(ValueError, match="unknown scaling 'global'"):
        lowp.TensorSpec("e4m3", scaling="global")
