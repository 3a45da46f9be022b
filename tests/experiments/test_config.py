"""Compare configuration: TOML round trip, overrides, one-line errors."""
import pytest

from lowp.experiments.config import CompareConfig, RecipeEntry, load_config, parse_config

TOML = """
task = "digits-mlp"
epochs = 2
seed = 3
lr = 0.1
recipes = ["fp32"]
"""

TABLES = """
task = "digits-mlp"

[[recipes]]
name = "fp32"

[[recipes]]
name = "fp8-hybrid-m1"
base = "fp8-hybrid"
overrides = {input = {margin = 1}, exempt_first_last = true}
"""


def test_round_trip_strings_and_tables(tmp_path):
    for text in (TOML, TABLES):
        cfg = parse_config(text)
        p = tmp_path / "c.toml"
        p.write_text(cfg.to_toml())
        assert load_config(p) == cfg
        assert CompareConfig.from_dict(cfg.to_dict()) == cfg


def test_values_parsed():
    cfg = parse_config(TOML)
    assert (cfg.task, cfg.epochs, cfg.seed, cfg.lr, cfg.batch_size) == ("digits-mlp", 2, 3, 0.1, None)
    assert cfg.recipes == (RecipeEntry("fp32"),)


def test_override_resolves_to_derived_recipe():
    cfg = parse_config(TABLES)
    r = cfg.recipes[1].resolve()
    assert r.name == "fp8-hybrid-m1" and r.input.margin == 1 and r.exempt_first_last
    assert r.input.format == "e4m3" and r.weight.margin == 0


def test_noscale_name():
    r = RecipeEntry("fp8-e5m2-noscale").resolve()
    assert r.loss_scaling.kind == "none" and r.grad_output.format == "e5m2"


@pytest.mark.parametrize("text,match", [
    ("task = ", "malformed config"),
    ("task = 'x'\nbogus = 1", "unknown config key"),
    ("epochs = 0", "epochs must be"),
    ("recipes = []", "no recipes"),
    ("recipes = ['fp32', 'fp32']", "duplicate recipe"),
    ("[[recipes]]\nbase = 'fp32'", "has no name"),
    ("jobs = 1.5", "jobs must be"),
])
def test_bad_config_one_line(text, match):
    with pytest.raises(ValueError, match=match) as e:
        parse_config(text, "x.toml")
    assert "\n" not in str(e.value)


def test_missing_file(tmp_path):
    with pytest.raises(ValueError, match="cannot read config"):
        load_config(tmp_path / "none.toml")


def test_replace_ignores_none():
    cfg = CompareConfig().replace(task=None, epochs=4)
    assert cfg.task == "mnist1d-cnn" and cfg.epochs == 4
    assert [r.name for r in cfg.recipes] == ["fp32", "bf16", "fp8-hybrid", "fp8-e5m2", "fp8-e5m2-noscale", "fp8-ibm"]
