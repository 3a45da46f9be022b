"""``lowp compare``: train one task under several recipes, write results.json, report.html and plots, print the
summary and timing tables. With no arguments: mnist1d-cnn under fp32, bf16, fp8-hybrid, fp8-e5m2, fp8-e5m2-noscale
and fp8-ibm, seeds 0, 1, 2, numerics on, into ./lowp-compare."""
from __future__ import annotations

import argparse
import os

from ..experiments.config import DEFAULT_OUT, DEFAULT_RECIPES, DEFAULT_SEEDS, DEFAULT_TASK


def run(args) -> int:
    from ..experiments.compare import compare
    from ..experiments.report import format_summary, format_table, format_timing

    if args.list_tasks:
        from ..experiments.task_analysis import task_listing

        print(task_listing())
        return 0
    comp = compare(task=args.task, recipes=args.recipes, epochs=args.epochs, seed=args.seed, seeds=args.seeds,
                   out=args.out, jobs=args.jobs, config=args.config, lr=args.lr, batch_size=args.batch_size,
                   numerics_every=args.numerics_every, numerics=False if args.no_numerics else None,
                   nproc=args.nproc, grad_hook=args.grad_hook, tensorboard=args.tensorboard,
                   quiet=args.quiet, progress=False if args.quiet else None, rerun_stale=args.rerun_stale)
    print(format_table(comp))
    print("\n" + format_summary(comp))
    print("\ntiming (this machine; × fp32 step = emulation cost, not a hardware speed-up):\n" + format_timing(comp))
    print(f"\nreport: {os.path.join(comp.out, 'report.html')}  results: {os.path.join(comp.out, 'results.json')}")
    bad = [r for r in comp.runs if r.status != "ok"]
    if bad and not args.allow_failures:
        import sys

        print(f"lowp compare: {len(bad)} of {len(comp.runs)} recipes did not finish cleanly ("
              + ", ".join(f"{r.recipe}: {r.status}" for r in bad) + "); exit status 1 (--allow-failures: 0)",
              file=sys.stderr)
        return EXIT_FAILED_RUNS
    return 0


class _EpilogAsIs(argparse.HelpFormatter):
    """Wraps the description as usual, prints the exit-status table as written."""

    def _fill_text(self, text, width, indent):
        return text if text.startswith("exit status:") else super()._fill_text(text, width, indent)


EXIT_FAILED_RUNS = 1
EXIT_CODES = """exit status:
  0    every recipe trained without error or divergence (or --allow-failures was given)
  1    at least one recipe ended in an error or diverged (results are still written)
  2    bad input (a value, a recipe, the config, an unwritable or locked --out): one line, nothing written
  130  interrupted (Ctrl-C); a rerun into the same --out resumes"""


def register(sub) -> None:
    p = sub.add_parser(
        "compare", help="train a task under several recipes and write a side-by-side report",
        description="Train one task under several recipes (identical initial weights and data order) and write "
                    "DIR/results.json, DIR/report.html and its PNG plots; print the summary table. Without "
                    f"arguments: task {DEFAULT_TASK}, recipes {','.join(DEFAULT_RECIPES)}, seeds "
                    f"{','.join(map(str, DEFAULT_SEEDS))}, out ./{DEFAULT_OUT}. "
                    "A rerun into the same DIR reuses finished recipes with identical settings (a run made by "
                    "another lowp build with a warning, or trained again with --rerun-stale). Command-line "
                    "options override --config.",
        epilog=EXIT_CODES, formatter_class=_EpilogAsIs)
    p.add_argument("--task", help=f"task name (default {DEFAULT_TASK}; see --list-tasks), or a function returning "
                                  "a Task: package.module:function or path/to/file.py:function")
    p.add_argument("--recipes", help="comma-separated recipe names (see `lowp recipes`)")
    p.add_argument("--epochs", type=int, help="epochs per recipe (default: the task's)")
    p.add_argument("--seed", type=int, help="one seed for initial weights and data order (same as --seeds N)")
    p.add_argument("--seeds", help="seeds, e.g. 0,1,2 or 0-4: every recipe trains once per seed, paired across "
                                   "recipes; the table shows mean ± sd and Δ vs fp32 with a 95%% CI "
                                   "(default 0,1,2)")
    p.add_argument("--lr", type=float, help="peak learning rate (default: the task's)")
    p.add_argument("--batch-size", type=int, help="batch size (default: the task's)")
    p.add_argument("--out", help=f"output directory (default ./{DEFAULT_OUT})")
    p.add_argument("--jobs", type=int, help="recipes trained in parallel processes (default 1)")
    p.add_argument("--config", help="TOML file: task, recipes (names or [[recipes]] tables with base and "
                                    "overrides), epochs, seeds, lr, batch_size, jobs, out, numerics, numerics_every")
    p.add_argument("--numerics-every", type=int, help="collect per-layer numerics statistics every N steps "
                                                      "(default: about 20 samples per run, at least 25 steps apart)")
    p.add_argument("--no-numerics", action="store_true", help="no per-layer numerics statistics (on by default)")
    p.add_argument("--tensorboard", metavar="DIR", help="also write per-epoch scalars of every recipe and seed to "
                                                        "DIR for TensorBoard (needs the tensorboard package)")
    p.add_argument("--nproc", type=int, help="train each recipe data-parallel on P processes (torch.distributed, "
                                             "gloo on loopback; default 1)")
    p.add_argument("--grad-hook", help="gradient communication hook with --nproc: none (default), "
                                       "adacomp[:CONV_BIN[:FC_BIN]], allreduce:FORMAT[:nearest|:stochastic][:ef]")
    p.add_argument("--quiet", action="store_true", help="no progress bars or log lines; only the table")
    p.add_argument("--allow-failures", action="store_true",
                   help="exit 0 even when a recipe failed or diverged (default: exit 1)")
    p.add_argument("--rerun-stale", action="store_true",
                   help="train again the finished runs in --out that another lowp build made (another lowp or "
                        "torch version, edited lowp sources, or a lowp that did not record its build); by default "
                        "they are reused with a warning and listed in results.json and the report")
    p.add_argument("--list-tasks", action="store_true", help="list the registered tasks and exit")
    p.set_defaults(func=run)
