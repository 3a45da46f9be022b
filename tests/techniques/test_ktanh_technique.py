"""K-TanH as a registered technique (``lowp.techniques.ktanh``): the transform entry ``ktanh[:TABLE]``, the recipe
spelling ``BASE+ktanh``, restore, and old recipe dicts with ``"activations": "ktanh"``."""
import json

import pytest
import torch
from torch import nn

import lowp
from lowp.ops import ktanh as K
from lowp.recipes import extensions
from lowp.recipes.recipe import Recipe


def _net():
    return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 4), nn.Sequential(nn.GELU(), nn.Sigmoid()))


@pytest.mark.parametrize("entry, table", [("ktanh", "max"), ("ktanh:mean", "mean")])
def test_transform_replaces_and_restore_puts_back(entry, table):
    net = _net()
    originals = (net[1], net[3][0], net[3][1])
    x = torch.randn(5, 3)
    ref = net(x)
    model = lowp.emulate(net, lowp.Recipe(transforms=(entry,)))
    assert (type(model[1]), type(model[3][0]), type(model[3][1])) == (K.KTanh, K.KGELU, K.KSigmoid)
    # the tanh layer computes K-TanH of its input with the requested table, bit for bit
    h = model[0](x)
    assert torch.equal(model[1](h), K.ktanh(h, table))
    assert not torch.equal(model(x), ref)  # the approximations change the output
    lowp.restore(model)
    assert (model[1], model[3][0], model[3][1]) == originals and torch.equal(model(x), ref)


def test_recipe_spelling_and_unknown_table():
    r = lowp.get_recipe("bf16+ktanh:mean")
    assert r.name == "bf16+ktanh:mean" and r.transforms == ("ktanh:mean",)
    assert r.input == lowp.get_recipe("bf16").input
    with pytest.raises(ValueError, match="unknown table 'nope'"):
        lowp.emulate(_net(), lowp.Recipe(transforms=("ktanh:nope",)))
    assert [t.name for t in extensions.techniques_of(r)] == ["ktanh"]


def test_old_recipe_dicts_with_activations_load_as_the_transform():
    old = {**json.loads(lowp.get_recipe("bf16").to_json()), "activations": "ktanh", "transforms": ["autosparse:0.5"]}
    r = Recipe.from_dict(old)
    assert r.transforms == ("ktanh", "autosparse:0.5")  # K-TanH ran before the other transforms
    assert "activations" not in r.to_dict() and Recipe.from_dict(r.to_dict()) == r
    assert Recipe.from_dict({**old, "activations": None}).transforms == ("autosparse:0.5",)
    assert lowp.get_recipe("fp32").replace(activations="ktanh").transforms == ("ktanh",)  # a config override
    with pytest.raises(TypeError):
        Recipe(activations="ktanh")  # the field is gone: the constructor takes transforms
