"""Storage widths of formats (block scales included) and the bytes a recipe implies, by hand, on a one-layer
model; the estimate's ratios of FP32 and BF16 recipes to their own baselines are 1."""
import pytest

from lowp.experiments.hwcost import estimate, format_bits, model_shapes, recipe_bits, storage
from lowp.experiments.tasks import get_task
from lowp.recipes import get_recipe

ONE = {"gemms": [{"layer": "0", "m": 8, "k": 4, "n": 2}], "params": 10, "optimizer_states": 2, "batch_size": 8}


def test_format_bits():
    assert [format_bits(n) for n in (None, "fp32", "bf16", "e4m3", "int2")] == [32, 32, 16, 8, 2]
    assert format_bits("mxfp8_e4m3") == 8 + 8 / 32 and format_bits("mxfp4_e2m1") == 4 + 8 / 32
    assert format_bits("nvfp4") == 4 + 8 / 16 and format_bits("nvfp4-16x16") == 4 + 8 / 256
    assert format_bits("fp8-1x128") == 8 + 32 / 128


def test_storage_by_hand():
    spec = get_recipe("fp8-hybrid").to_dict()
    b = recipe_bits(spec)
    assert (b.x, b.w, b.y, b.dy, b.dx, b.dw, b.x_wgrad) == (8, 8, 32, 8, 32, 32, 8)
    s = storage(ONE, spec)
    assert s == {"master_weights": 10 * 4, "gemm_weights": 4 * 2 * 1, "saved_activations": 8 * 4 * 1,
                 "optimizer_state": 10 * 2 * 4, "gradient_comm": 10 * 4}
    assert storage(ONE, get_recipe("bf16").to_dict())["gradient_comm"] == 10 * 2


def test_estimate_ratios():
    for name, key in (("fp32", "x_fp32"), ("bf16", "x_bf16")):
        for hw in estimate(ONE, get_recipe(name).to_dict()).values():
            assert hw[key] == pytest.approx(1.0)
    big = {**ONE, "gemms": [{"layer": "0", "m": 8192, "k": 8192, "n": 8192}]}
    e = estimate(big, get_recipe("b200-mxfp8").to_dict())
    assert e["B200"]["x_bf16"] < 0.6 and e["H100 SXM"]["x_bf16"] < 0.6  # compute-bound: about the FP8/BF16 ratio


def test_model_shapes_of_a_task():
    m = model_shapes(get_task("digits-mlp"), 32)
    assert m["gemms"] == [{"layer": "0", "m": 32, "k": 64, "n": 128}, {"layer": "2", "m": 32, "k": 128, "n": 64},
                          {"layer": "4", "m": 32, "k": 64, "n": 10}] or len(m["gemms"]) == 3
    assert m["params"] == 64 * 128 + 128 + 128 * 64 + 64 + 64 * 10 + 10 and m["optimizer_states"] == 1
