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


def test_fixed16_sr_is_guptas_mnist_setting():
    """Gupta et al. 2015 (MNIST): word length 16, FL = 14, stochastic rounding of every rounded tensor, products
    summed in high precision and rounded once, weights stored in fixed point (no FP32 copy)."""
    from lowp.recipes.recipe import ROLES

    r = lowp.get_recipe("fixed16-sr")
    for role in ROLES + ("master",):
        s = getattr(r, role)
        assert (s.format, s.rounding, s.scaling, s.rand_bits) == ("fixed<2,14>", "stochastic", "none", None), role
    f = r.master.fmt
    assert (f.il + f.fl, f.fl, f.max) == (16, 14, 2 - 2.0**-14)
    assert r.accumulate is None and r.chunk is None  # FP32 sums of exact products, one rounding per GEMM output
    assert r.optim_state is None and r.loss_scaling.kind == "none"
    assert not r.exempt_first_last and r.exempt == () and r.nongemm is None
    assert "does NOT reproduce" in r.notes and "fixed-point.md" in r.notes  # the notes state the result


def test_fixed16_sr_update_below_one_ulp_survives_in_expectation():
    """The recipe's weight update: w <- SR_<2,14>(w - lr·g). A quarter-ULP step (2^-16) is lost by nearest but kept
    in expectation by stochastic rounding (P(up) = 1/4 exactly); the weight never leaves [-2, 2 - 2^-14]."""
    import torch

    from lowp.recipes.optim import LowpOptimizer

    def run(recipe, start, n_steps=400, n=4096):
        torch.manual_seed(0)
        w = torch.nn.Parameter(torch.full((n,), start))
        opt = LowpOptimizer(torch.optim.SGD([w], lr=1.0), recipe)
        for _ in range(n_steps):
            w.grad = torch.full_like(w, -(2.0**-16))
            assert opt.step()
        return w.detach().double()

    r = lowp.get_recipe("fixed16-sr")
    sto = run(r, 0.5)
    assert torch.equal(lowp.quantize(sto.float(), "fixed<2,14>").double(), sto)  # stays on the grid
    # FP32: 0.5 + 400·2^-16; per element sd sqrt(400·¼·¾)·2^-14 ≈ 5.3e-4, sd of the mean over 4096 ≈ 8.3e-6
    assert abs(sto.mean().item() - (0.5 + 400 * 2.0**-16)) < 5e-5
    assert 3e-4 < sto.std().item() < 8e-4
    near = run(r.replace(master={"rounding": "nearest"}), 0.5)
    assert torch.equal(near, torch.full_like(near, 0.5))
    top = run(r, 2 - 2.0**-14)
    assert top.max().item() == 2 - 2.0**-14  # saturates at the format's max
