"""Comparisons built without training, for report tests: recipes × seeds with made-up but consistent histories,
numerics records and the digits-mlp model's shapes."""
from lowp.experiments.compare import Comparison, _with_deltas
from lowp.experiments.train import RunResult

RECIPES = {"fp32": 0.0, "bf16": 0.002, "fp8-hybrid": -0.03}  # recipe -> offset of its metric from fp32's
NUMERICS = [{"layer": l, "role": ro, "step": s, "underflow": u, "overflow": 0.0, "subnormal": 0.0, "sqnr_db": 30.0,
             "amax": 1.0} for s in (0, 20) for l, ro, u in [("1", "input", 0.01), ("3", "grad_output", 0.2)]]
MODEL = {"gemms": [{"layer": "1", "m": 32, "k": 64, "n": 128}, {"layer": "3", "m": 32, "k": 128, "n": 64},
                   {"layer": "5", "m": 32, "k": 64, "n": 10}], "params": 17226, "optimizer_states": 1,
         "batch_size": 32}


def run(recipe, seed, metric, metric_name="accuracy", step_s=0.01):
    hist = tuple({"epoch": e, "train_loss": 2.0 / e + 0.01 * seed, "test_metric": metric * e / 2} for e in (1, 2))
    return RunResult(recipe=recipe, metric=metric, metric_name=metric_name, diverged=False, history=hist,
                     skipped_steps=0, wall_s=1.5, steps=90, settings={"task": "digits-mlp", "seed": seed},
                     recipe_spec={"name": recipe, "source": "test"}, first_use_s=0.2, step_s=step_s,
                     peak_rss_mb=400.0, numerics=None if recipe == "fp32" else tuple(NUMERICS))


def comparison(seeds=(0, 1, 2), recipes=RECIPES, out=None):
    base = {0: 0.90, 1: 0.88, 2: 0.91, 3: 0.89, 4: 0.905}
    runs = [run(name, s, base[s] + off + 0.001 * s * (name != "fp32")) for name, off in recipes.items()
            for s in seeds]
    return Comparison("digits-mlp", seeds[0], 2, 0.05, 32, "accuracy", tuple(_with_deltas(runs)), out,
                      seeds=tuple(seeds), model=MODEL)
