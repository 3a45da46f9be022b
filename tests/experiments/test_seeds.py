"""Seeds in lowp.compare: a planted, really worse recipe (2-bit weights and errors) is marked worse beyond seed
noise, a copy of FP32 under another name is not; results.json keeps every run and the aggregates the table shows;
resume per (recipe, seed); seed parsing and config."""
import json

import pytest

import lowp
from lowp.experiments.compare import load_results, parse_seeds
from lowp.experiments.config import CompareConfig, parse_config
from lowp.experiments.report import format_table, summary_lines, table_rows

PLANTED = """
task = "digits-mlp"
epochs = 1
seeds = [0, 1, 2]

[[recipes]]
name = "fp32"

[[recipes]]
name = "fp32-twin"
base = "fp32"

[[recipes]]
name = "w2"
base = "fp32"
overrides = {weight = "int2", grad_output = "int2"}
"""


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    d = tmp_path_factory.mktemp("seeds")
    (d / "exp.toml").write_text(PLANTED)
    comp = lowp.compare(config=str(d / "exp.toml"), out=str(d / "o"), quiet=True, numerics_every=25)
    return d / "o", comp


def test_really_worse_is_significant_and_twin_is_not(planted):
    out, comp = planted
    by = {s.recipe: s for s in comp.summaries()}
    assert by["w2"].delta.n == 3 and by["w2"].delta.significant and by["w2"].delta.hi < 0
    twin = by["fp32-twin"].delta
    assert twin.mean == 0.0 and not twin.significant  # same seed, same arithmetic: identical runs
    rows = {r["recipe"]: r for r in table_rows(comp)}
    assert (rows["w2"]["verdict"], rows["fp32-twin"]["verdict"], rows["fp32"]["verdict"]) == ("worse", "noise", "ref")
    lines = summary_lines(comp)
    assert any(l.startswith("worse than fp32 beyond seed noise (3 seeds") and "w2" in l for l in lines)
    assert any(l.startswith("not distinguishable from fp32") and "fp32-twin" in l for l in lines)
    assert lines[0].endswith(", w2")  # ranked last


def test_results_json_keeps_every_run_and_the_aggregate(planted):
    out, comp = planted
    res = json.loads((out / "results.json").read_text())
    assert res["seeds"] == [0, 1, 2] and len(res["results"]) == 9
    assert [(e["recipe"], e["settings"]["seed"]) for e in res["results"][:3]] == [("fp32", 0), ("fp32", 1),
                                                                                   ("fp32", 2)]
    agg = {a["recipe"]: a for a in res["aggregate"]}
    w2 = [e for e in res["results"] if e["recipe"] == "w2"]
    fp = {e["settings"]["seed"]: e["metric"] for e in res["results"] if e["recipe"] == "fp32"}
    diffs = [e["metric"] - fp[e["settings"]["seed"]] for e in w2]
    assert agg["w2"]["delta"]["mean"] == pytest.approx(sum(diffs) / 3)
    assert [e["fp32_delta"] for e in w2] == pytest.approx(diffs)
    assert agg["w2"]["metric"] == pytest.approx(sum(e["metric"] for e in w2) / 3)
    # the seeds differ (init and data order) and pair across recipes
    assert len({e["metric"] for e in res["results"] if e["recipe"] == "fp32"}) > 1
    for e in res["results"]:
        assert e["step_s"] > 0 and e["first_use_s"] >= 0 and e["peak_rss_mb"] > 0
    # the table shows the aggregate: mean ± sd in percent, Δ and its CI in points
    row = {r["recipe"]: r for r in table_rows(comp)}["w2"]
    m, sd = row["metric"].split(" ± ")
    assert float(m) == pytest.approx(100 * agg["w2"]["metric"], abs=0.006)
    assert float(sd) == pytest.approx(100 * agg["w2"]["metric_sd"], abs=0.006)
    lo, hi = (float(x) for x in row["ci"].strip("[]").split(", "))
    assert (lo, hi) == pytest.approx((100 * agg["w2"]["delta"]["lo"], 100 * agg["w2"]["delta"]["hi"]), abs=0.006)
    assert "mean ± sd" in format_table(comp).splitlines()[0]
    assert load_results(str(out)).runs == comp.runs
    assert (out / "delta.png").stat().st_size > 1000 and (out / "numerics-w2.png").is_file()


def test_resume_per_recipe_and_seed(planted, tmp_path):
    out, comp = planted
    again = lowp.compare(config=str(out / "config.toml"), quiet=True, report=False)
    assert len(again.reused) == 9 and again.runs == comp.runs
    sub = lowp.compare(config=str(out / "config.toml"), seeds="0,2", quiet=True, report=False)
    assert len(sub.reused) == 6 and sub.seeds == (0, 2) and {r.seed for r in sub.runs} == {0, 2}


def test_seed_parsing_and_config():
    assert parse_seeds("0,1,2") == [0, 1, 2] and parse_seeds("3-5, 9") == [3, 4, 5, 9]
    for bad in ("a", "5-1", ","):
        with pytest.raises(ValueError, match="seed"):
            parse_seeds(bad)
    assert parse_config("seeds = [4, 5]").seeds == (4, 5)
    assert parse_config("seed = 7").seeds == (7,)
    assert CompareConfig().seeds == (0, 1, 2) and CompareConfig().numerics
    for text, match in (("seeds = []", "at least one"), ("seeds = [1, 1]", "duplicate seed"),
                        ("seed = 1\nseeds = [2]", "either seed or seeds"), ("seeds = [-1]", "seed must be")):
        with pytest.raises(ValueError, match=match):
            parse_config(text)
    with pytest.raises(ValueError, match="either seed or seeds"):
        lowp.compare(task="digits-mlp", seed=1, seeds=[1, 2])


def test_default_numerics_interval():
    from lowp.experiments.compare import numerics_interval

    # the default run: 10 epochs of 63 steps, 20 samples; a short run keeps the 25-step floor
    assert (numerics_interval(630), numerics_interval(63), numerics_interval(None), numerics_interval(10**6)) == (
        32, 25, 25, 50000)
