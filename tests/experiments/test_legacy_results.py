"""Results written before techniques reported through ``RunResult.extras`` (AutoSparse's ``sparsity``,
``train_flops_ratio`` and ``inference_flops_ratio`` at the top level of a run; K-TanH as the recipe field
``activations``) still load, render, and count as finished runs for a resumed comparison."""
import json

from lowp.experiments.compare import Comparison, _current_key, _run_key
from lowp.experiments.report import render
from lowp.experiments.train import RunResult, RunSettings
from lowp.recipes import get_recipe

from .synthetic import comparison


def _old_autosparse_run() -> dict:
    d = comparison(seeds=(0,), recipes={"fp32": 0.0}).runs[0].to_dict()
    del d["extras"]
    d.update(recipe="fp32+autosparse:0.8", sparsity=0.8, train_flops_ratio=0.75, inference_flops_ratio=0.2,
             recipe_spec={"name": "fp32+autosparse:0.8", "activations": None, "transforms": ["autosparse:0.8"]},
             history=[{**h, "sparsity": 0.4 * h["epoch"], "layer_sparsity": {"1": 0.3 * h["epoch"]}}
                      for h in d["history"]])
    return d


def test_old_top_level_fields_move_into_extras():
    r = RunResult.from_dict(_old_autosparse_run())
    assert r.extras == {"sparsity": 0.8, "train_flops_ratio": 0.75, "inference_flops_ratio": 0.2}
    d = r.to_dict()
    assert "sparsity" not in d and RunResult.from_dict(d) == r
    none = RunResult.from_dict({**_old_autosparse_run(), "sparsity": None, "train_flops_ratio": None,
                                "inference_flops_ratio": None})
    assert none.extras == {}


def test_old_results_render_with_the_technique_column_and_section(tmp_path):
    old = comparison(seeds=(0,), recipes={"fp32": 0.0}).to_dict()
    old["results"].append(_old_autosparse_run())
    for r in old["results"]:
        r.pop("extras", None)
    comp = Comparison.from_dict(json.loads(json.dumps(old)), str(tmp_path))
    html = open(render(comp, str(tmp_path)), encoding="utf-8").read()
    assert "<th>sparsity %</th>" in html and "<td>80.0</td>" in html and "<td>0.75 / 0.20</td>" in html
    assert "<h2>Sparsity</h2>" in html and (tmp_path / "sparsity.png").stat().st_size > 0


def test_old_run_key_matches_todays_recipe():
    st = RunSettings("digits-mlp", seed=0, epochs=2)
    new = get_recipe("bf16").replace(name="bf16-ktanh", transforms=("ktanh",))
    old_spec = {**json.loads(get_recipe("bf16").to_json()), "name": "bf16-ktanh", "activations": "ktanh"}
    old_key = json.loads(json.dumps({"settings": st.to_dict(), "recipe": old_spec, "numerics_every": None}))
    key = _run_key(st, json.loads(json.dumps(new.to_dict())), None)
    assert old_key != key and _current_key(old_key) == key
    assert _current_key({**old_key, "recipe": {**old_spec, "activations": 5}}) is None  # not a recipe: no match
