"""A technique is a plugin: a toy "weight noise" technique written entirely in this file (Gaussian noise added to
every weight at the start of each epoch, a per-layer epoch metric, a run metric, a table column and a report
section) is registered and runs through ``lowp.compare`` and the report with nothing in ``lowp/experiments``,
``lowp/cli`` or the report naming it."""
from __future__ import annotations

import ast
import json
import pathlib

import pytest
import torch

import lowp
from lowp.experiments.report import format_table
from lowp.recipes import extensions
from lowp.recipes.technique import Column, LayerPlot, ReportSection, Technique

NAME = "weightnoise"
_STATE = "_test_weightnoise"
SIGMA = 0.01


class WeightNoise(Technique):
    """Entry ``weightnoise[:SIGMA]``: at the start of each epoch every ≥2-D weight gets w += N(0, SIGMA²) noise
    (its own generator, seeded 1234, so the run's RNG is untouched); the history records the RMS of the noise added
    per layer, the run the mean of those, the table a column, the report a section with a per-layer plot."""

    name = NAME
    supports_data_parallel = False
    columns = (Column("weight_noise", "weight noise RMS",
                      lambda x: None if x.get("weight_noise_rms") is None else f"{x['weight_noise_rms']:.5f}"),)

    def transform(self, model, recipe, args):
        model.__dict__[_STATE] = {"sigma": float(args or SIGMA), "gen": torch.Generator().manual_seed(1234),
                                  "last": {}}
        return model

    def undo(self, model):
        model.__dict__.pop(_STATE, None)

    def on_epoch(self, model, epoch, epochs):
        st = model.__dict__[_STATE]
        with torch.no_grad():
            for n, p in model.named_parameters():
                if p.dim() >= 2:
                    noise = torch.randn(p.shape, generator=st["gen"]) * st["sigma"]
                    p.add_(noise)
                    st["last"][n] = float(noise.pow(2).mean().sqrt())

    def epoch_metrics(self, model, sample):
        return {"weight_noise": dict(model.__dict__[_STATE]["last"])}

    def run_metrics(self, details):
        vals = [v for d in details for v in d["weight_noise"].values()]
        return {"weight_noise_rms": sum(vals) / len(vals)} if vals else {}

    def report_section(self, runs):
        return ReportSection("Weight noise", "<p id='weight-noise'>RMS of the Gaussian noise added to each layer's "
                             "weights at the start of each epoch.</p>",
                             (LayerPlot("weight_noise", "noise RMS", "weight-noise.png", "weight noise per layer"),))


@pytest.fixture
def weightnoise():
    extensions.load_plugins()
    extensions.register_technique(WeightNoise())
    yield
    extensions.unregister_technique(NAME)


def test_toy_technique_runs_through_compare_and_report(tmp_path, weightnoise):
    recipe = f"fp32+{NAME}:{SIGMA}"
    comp = lowp.compare(task="digits-mlp", recipes=f"fp32,{recipe}", epochs=2, seed=0, out=str(tmp_path),
                        quiet=True, progress=False)
    runs = {r.recipe: r for r in comp.runs}
    noisy, ref = runs[recipe], runs["fp32"]
    assert noisy.status == "ok" and ref.status == "ok"
    assert noisy.recipe_spec["transforms"] == [f"{NAME}:{SIGMA}"]
    # the hook ran: the same seed, data and initial weights, yet the first epoch's loss differs from fp32's
    assert noisy.history[0]["train_loss"] != ref.history[0]["train_loss"]
    # its epoch metric: the RMS of N(0, σ²) noise over a layer's weights (≥ 640 entries each: within 10% of σ)
    for h in noisy.history:
        assert set(h["weight_noise"]) == {"1.weight", "3.weight", "5.weight"}
        assert all(v == pytest.approx(SIGMA, rel=0.1) for v in h["weight_noise"].values())
    assert "weight_noise" not in ref.history[-1] and ref.extras == {}
    assert noisy.extras["weight_noise_rms"] == pytest.approx(SIGMA, rel=0.1)
    saved = {r["recipe"]: r for r in json.loads((tmp_path / "results.json").read_text())["results"]}
    assert saved[recipe]["extras"] == noisy.extras
    assert saved[recipe]["history"][-1]["weight_noise"] == noisy.history[-1]["weight_noise"]
    # the report: its column (terminal and HTML tables) and its section with the plot
    assert "weight noise RMS" in format_table(comp)
    html = (tmp_path / "report.html").read_text()
    assert "<th>weight noise RMS</th>" in html and f"<td>{noisy.extras['weight_noise_rms']:.5f}</td>" in html
    assert "<h2>Weight noise</h2><p id='weight-noise'>" in html and "<img src='weight-noise.png'" in html
    assert (tmp_path / "weight-noise.png").stat().st_size > 0


def test_capabilities_are_checked_without_naming_the_technique(tmp_path, weightnoise):
    with pytest.raises(ValueError, match=f"technique '{NAME}' cannot run data-parallel"):
        lowp.compare(task="digits-mlp", recipes=f"fp32+{NAME}", epochs=1, seed=0, out=str(tmp_path / "o"),
                     quiet=True, nproc=2)
    assert not (tmp_path / "o").exists()


def _code_words(source: str) -> str:
    """The identifiers, imported module names and string constants of ``source`` except docstrings, lowercased."""
    tree = ast.parse(source)
    docs = {id(n.body[0].value) for n in ast.walk(tree)
            if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and n.body
            and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    out = []
    for n in ast.walk(tree):
        if isinstance(n, ast.Name):
            out.append(n.id)
        elif isinstance(n, ast.Attribute):
            out.append(n.attr)
        elif isinstance(n, ast.alias):
            out.append(n.name)
        elif isinstance(n, ast.ImportFrom):
            out.append(n.module or "")
        elif isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docs:
            out.append(n.value)
    return "\n".join(out).lower()


def test_no_layer_above_names_a_technique():
    """The training loop, compare, the report, the data-parallel runner, io, aggregate and the compare/report
    commands reach techniques only through the registry: no identifier, import or string of theirs names one
    (docstrings may, as examples)."""
    root = pathlib.Path(lowp.__file__).parent
    files = [root / "experiments" / f for f in ("train.py", "compare.py", "report.py", "report_techniques.py",
                                                "io.py", "aggregate.py", "parallel.py", "rerender.py")]
    files += [root / "cli" / f for f in ("compare.py", "report.py")]
    words = ("autosparse", "pact", "ktanh", "sparsity", "flops_ratio", "techniques.", NAME)
    named = {(f.name, w) for f in files for w in words if w in _code_words(f.read_text())}
    # train.LEGACY_EXTRAS: AutoSparse's fields of results.json files written before ``extras``, read back into it
    assert named == {("train.py", "sparsity"), ("train.py", "flops_ratio")}
    assert "sparsity" in _code_words('x = {"sparsity": 1}') and "pact" not in _code_words('"""PACT."""\nx = 1')


class _Clash(Technique):
    name = "test-clash"

    def transform(self, model, recipe, args):
        return model

    def epoch_metrics(self, model, sample):
        return {"train_loss": 1.0}


def test_an_epoch_metric_may_not_overwrite_the_history(weightnoise):
    from lowp.experiments.train import epoch_report

    extensions.register_technique(_Clash())
    try:
        model = lowp.emulate(torch.nn.Sequential(torch.nn.Linear(2, 2)), lowp.Recipe(transforms=("test-clash",)))
        with pytest.raises(ValueError, match=r"technique 'test-clash': epoch metric\(s\) \['train_loss'\] clash"):
            epoch_report(model, torch.zeros(1, 2))
        lowp.emulate(model, lowp.Recipe(transforms=(f"{NAME}:0.5",)))
        extras, details = epoch_report(model, torch.zeros(1, 2))
        assert extras == {"weight_noise": {}} and details == {NAME: {"weight_noise": {}}}  # no epoch started yet
    finally:
        extensions.unregister_technique("test-clash")
