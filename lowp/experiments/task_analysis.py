"""Analyses of a task's model that need no training (``lowp coverage``, ``lowp accum-bits --task``, ``lowp compare
--list-tasks``): the model built right after ``torch.manual_seed(seed)``, run on the task's first training inputs.

- :func:`task_coverage`: which GEMM-like calls each recipe emulates (``lowp.recipes.coverage``, one
  forward+backward step);
- :func:`task_accum_bits`: the minimum accumulator mantissa bits of every GEMM of the model (Sakr et al. 2019,
  ``lowp.analysis.gemm_shapes.model_accum_bits``);
- :func:`task_listing`: one line per registered task with its metric and default hyper-parameters.
"""
from __future__ import annotations

from typing import Any

import torch

from .data import TaskData, first_inputs
from .tasks import example_batch, get_task, task_names


def task_coverage(task: str, recipes: list[str], batch: int = 8, seed: int = 0) -> tuple[str, list[Any]]:
    """``lowp.recipes.coverage`` of ``task``'s model (built after ``torch.manual_seed(seed)``) under each recipe,
    on its first ``batch`` training inputs. Returns (the task's name, one Coverage per recipe, in order). Unknown
    names are ValueErrors."""
    from ..recipes import coverage, get_recipe

    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValueError(f"--batch must be >= 1, got {batch}")
    t = get_task(task)
    rs = [get_recipe(r) for r in recipes]
    if not rs:
        raise ValueError("no recipe given")
    torch.manual_seed(seed)
    model = t.build_model()
    inputs, kwargs = example_batch(t, batch)
    return t.name, [coverage(model, *inputs, recipe=r, **kwargs) for r in rs]


def task_accum_bits(task: str, product_man: int, chunk: int | None = None, batch: int | None = None,
                    **criterion: Any) -> dict[str, Any]:
    """The minimum accumulator mantissa bits of every GEMM of ``task``'s model (forward n = k·C_in, backward
    n = k·C_out, weight gradient n = batch·H·W) for products with ``product_man`` mantissa bits, on a batch of
    ``batch`` training inputs (default the task's batch size); ``criterion``: ``criterion``, ``cutoff``, ``eps`` of
    ``lowp.analysis.vrr.min_accumulator_bits``. Returns {task, product_man, chunk, batch, gemms: [row per GEMM]}."""
    from ..analysis.gemm_shapes import model_accum_bits

    t = get_task(task)  # unknown name -> ValueError listing the known ones
    data = t.load_data()
    batch = t.batch_size if batch is None else batch
    n = len(data.x_train) if isinstance(data, TaskData) else None
    if n is not None and batch > n:
        raise ValueError(f"--batch {batch} exceeds the training set of task {task!r} ({n} samples)")
    sample = first_inputs(data, batch)
    rows = model_accum_bits(t.build_model(), sample, product_man, chunk, **criterion)
    return {"task": task, "product_man": product_man, "chunk": chunk, "batch": int(sample.shape[0]), "gemms": rows}


def task_listing() -> str:
    """One line per registered task: name, metric, default epochs, learning rate, batch size and description (a
    task that cannot be built says why, without hiding the others)."""
    names = task_names()
    w = max([18] + [len(n) for n in names])
    lines = []
    for n in names:
        try:
            t = get_task(n)
        except Exception as e:  # noqa: BLE001 - a broken user task must not hide the others
            lines.append(f"{n:{w}s} (cannot be built: {type(e).__name__}: {e})")
            continue
        lines.append(f"{n:{w}s} {t.metric_name:15s} epochs {t.epochs:3d}  lr {t.lr:<6g} batch {t.batch_size:4d}  "
                     f"{t.description}")
    return "\n".join(lines)
