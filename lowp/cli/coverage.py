"""``lowp coverage``: which GEMM-like calls of a task's model a recipe emulates (``lowp.coverage``), one line per
call, with forward/backward FLOPs, the formats per role or the reason a call stays in high precision."""
from __future__ import annotations

import json

from . import CLIError


def run(args) -> int:
    import torch

    from ..experiments.tasks import example_batch, get_task
    from ..recipes import coverage, get_recipe

    if args.batch is not None and args.batch < 1:
        raise CLIError(f"--batch must be >= 1, got {args.batch}")
    task = get_task(args.task)
    recipes = [get_recipe(r) for r in args.recipe.split(",") if r.strip()]
    if not recipes:
        raise CLIError(f"--recipe names no recipe: {args.recipe!r}")
    torch.manual_seed(args.seed)
    model = task.build_model()
    inputs, kwargs = example_batch(task, args.batch or 8)
    results = []
    for r in recipes:
        cov = coverage(model, *inputs, recipe=r, **kwargs)
        results.append(cov)
        if not args.json:
            print(f"# task {task.name}, recipe {r.name}, batch of {args.batch or 8}")
            print(cov.table(max_rows=None if args.all else 60))
            print()
    if args.json:
        print(json.dumps([c.to_dict() for c in results], indent=2))
    return 0


def register(sub) -> None:
    p = sub.add_parser("coverage", help="list every GEMM-like call of a task's model and what a recipe does with it",
                       description="Run one forward+backward step of a task's model on a small batch under each "
                                   "recipe and print one line per GEMM-like call: module path and op, FLOPs, the "
                                   "format of each role, or why it stayed in high precision; the last line gives "
                                   "the emulated share of the GEMM FLOPs, measured against an independent count "
                                   "of every aten GEMM that ran.")
    p.add_argument("--task", required=True, help="task name or package.module:function (see lowp compare "
                                                  "--list-tasks)")
    p.add_argument("--recipe", required=True, help="recipe name(s), comma-separated, or a .json path")
    p.add_argument("--batch", type=int, help="examples in the batch (default 8)")
    p.add_argument("--seed", type=int, default=0, help="seed of the model's initial weights (default 0)")
    p.add_argument("--all", action="store_true", help="print every row (default: the first 60)")
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    p.set_defaults(func=run)
