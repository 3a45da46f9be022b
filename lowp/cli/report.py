"""``lowp report DIR [DIR...]``: render the compare report again from results.json files, or merge several
comparison folders into one report, without training."""
from __future__ import annotations


def run(args) -> int:
    from ..experiments.rerender import report

    path = report(args.dirs, args.out)
    print(f"report: {path}")
    return 0


def register(sub) -> None:
    p = sub.add_parser(
        "report", help="re-render or merge compare reports from existing results.json files",
        description="Render DIR/report.html and its plots again from DIR/results.json (no training). With several "
                    "folders of the same task and settings, merge their runs (recipes and seeds) into one "
                    "comparison written to --out (default ./lowp-report). A folder without results.json is an "
                    "error (exit status 2).")
    p.add_argument("dirs", nargs="+", metavar="DIR", help="lowp compare output folder(s)")
    p.add_argument("--out", help="output folder (default: DIR itself for one folder, ./lowp-report for several)")
    p.set_defaults(func=run)
