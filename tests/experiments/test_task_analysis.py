"""Analyses of a task's model without training: coverage per recipe, accumulator bits per GEMM, the task list."""
import pytest

from lowp.experiments.task_analysis import task_accum_bits, task_coverage, task_listing
from lowp.experiments.tasks import task_names


def test_task_coverage_per_recipe_in_order():
    name, covs = task_coverage("digits-mlp", ["fp32", "bf16"], batch=4)
    assert name == "digits-mlp" and [c.recipe for c in covs] == ["fp32", "bf16"]
    assert covs[0].emulated_fraction == 0.0 and covs[1].emulated_fraction == 1.0
    with pytest.raises(ValueError, match="--batch must be >= 1, got 0"):
        task_coverage("digits-mlp", ["bf16"], batch=0)
    with pytest.raises(ValueError, match="unknown recipe 'fp9'"):
        task_coverage("digits-mlp", ["fp9"])


def test_task_accum_bits_lengths_and_batch_bound():
    d = task_accum_bits("digits-mlp", 5, batch=16)
    assert d["batch"] == 16
    n = {(r["layer"], r["pass"]): r["n"] for r in d["gemms"]}
    first = d["gemms"][0]["layer"]
    assert n[(first, "forward")] == 64 and n[(first, "weight_grad")] == 16  # 8x8 inputs, batch 16
    with pytest.raises(ValueError, match="exceeds the training set of task 'digits-mlp' \\(1437 samples\\)"):
        task_accum_bits("digits-mlp", 5, batch=5000)


def test_task_listing_one_line_per_task():
    lines = task_listing().splitlines()
    assert len(lines) == len(task_names())
    assert lines[0].split()[0] == task_names()[0] and "epochs" in lines[0]
