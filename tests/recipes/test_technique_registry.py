"""The technique registry of ``lowp.recipes.extensions``: registration checks, lookup of transform entries, the
``BASE+name[:args]`` spelling of a technique without a modifier, and emulate/restore calling transform and undo."""
import pytest
import torch
from torch import nn

import lowp
from lowp.recipes import extensions
from lowp.recipes.emulate import applied_techniques
from lowp.recipes.technique import FunctionTechnique, Technique


class Scale(Technique):
    """Multiply every Linear weight by ``args`` (default 2); undo divides it back."""

    name = "test-scale"

    def transform(self, model, recipe, args):
        k = float(args or 2)
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, nn.Linear):
                    m.weight.mul_(k)
        model.__dict__["_test_scale"] = k
        return model

    def undo(self, model):
        k = model.__dict__.pop("_test_scale", None)
        if k is not None:
            with torch.no_grad():
                for m in model.modules():
                    if isinstance(m, nn.Linear):
                        m.weight.div_(k)


@pytest.fixture
def scale():
    extensions.register_technique(Scale())
    yield
    extensions.unregister_technique("test-scale")


def test_emulate_applies_and_restore_undoes(scale):
    lin = nn.Linear(3, 3)
    w = lin.weight.detach().clone()
    model = lowp.emulate(nn.Sequential(lin), lowp.get_recipe("fp32+test-scale:4"))
    assert torch.equal(lin.weight.detach(), 4 * w)
    assert [t.name for t in applied_techniques(model)] == ["test-scale"]
    lowp.restore(model)
    assert torch.equal(lin.weight.detach(), w) and applied_techniques(model) == []


def test_recipe_spelling_and_lookup(scale):
    r = lowp.get_recipe("bf16+test-scale:3+autosparse:0.5")
    assert r.name == "bf16+test-scale:3+autosparse:0.5" and r.transforms == ("test-scale:3", "autosparse:0.5")
    t, args = extensions.get_technique("test-scale:3")
    assert isinstance(t, Scale) and args == "3"
    twice = lowp.Recipe(transforms=("test-scale:2", "autosparse", "test-scale:3"))
    assert [t.name for t in extensions.techniques_of(twice)] == ["test-scale", "autosparse"]
    assert extensions.techniques_of(None) == []
    with pytest.raises(ValueError, match="unknown recipe modifier 'nope' .*test-scale"):
        lowp.get_recipe("fp32+nope")
    with pytest.raises(ValueError, match="unknown model transform 'nope'"):
        extensions.get_technique("nope:1")


def test_registration_checks():
    with pytest.raises(TypeError, match="needs a lowp Technique, got function"):
        extensions.register_technique(lambda m, r, a: m)
    for bad in ("", "a:b", "a+b"):
        with pytest.raises(ValueError, match="technique name must be"):
            extensions.register_technique(FunctionTechnique(bad, lambda m, r, a: m))
    with pytest.raises(ValueError, match="unknown technique 'never-registered'"):
        extensions.unregister_technique("never-registered")
    t = extensions.register_transform("test-fn", lambda m, r, a: m)
    try:
        assert isinstance(t, FunctionTechnique) and extensions.TECHNIQUES["test-fn"] is t
        assert t.epoch_metrics(None, None) == {} and t.run_metrics(()) == {} and t.report_section(()) is None
        t.undo(nn.Linear(1, 1))  # no undo given: a no-op
    finally:
        extensions.unregister_technique("test-fn")


def test_builtin_techniques_are_registered():
    names = [t.name for t in extensions.registered_techniques()]
    assert {"pact", "dorefa", "wrpn", "ternary-ft", "autosparse", "ktanh"} <= set(names)
    caps = {t.name: t.supports_data_parallel for t in extensions.registered_techniques()}
    assert caps["autosparse"] is False and caps["pact"] is True
