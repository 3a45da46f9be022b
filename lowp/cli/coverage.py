"""``lowp coverage``: which GEMM-like calls of a task's model a recipe emulates (``lowp.coverage``), one line per
call, with forward/backward FLOPs, the formats per role or the reason a call stays in high precision."""
from __future__ import annotations

import json

from . import CLIError


def run(args) -> int:
    from ..experiments.task_analysis import task_coverage

    names = [r.strip() for r in args.recipe.split(",") if r.strip()]
    if not names:
        raise CLIError(f"--recipe names no recipe: {args.recipe!r}")
    batch = 8 if args.batch is None else args.batch
    task, results = task_coverage(args.task, names, batch, args.seed)
    if args.json:
        print(json.dumps([c.to_dict() for c in results], indent=2))
        return 0
    for cov in results:
        print(f"# task {task}, recipe {cov.recipe}, batch of {batch}")
        print(cov.table(max_rows=None if args.all else 60))
        print()
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
