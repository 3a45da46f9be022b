"""Machine-readable output of a benchmark (``--json PATH``): every figure it prints, as flat records, with the run's
setting (torch version, threads, the parsed arguments). ``scripts/readme_performance.py`` builds the README's
Performance table from these files. Importable by the benchmarks because a script's own folder is on ``sys.path``.
"""
from __future__ import annotations

import argparse
import json
import os
import time

import torch


def add_json_arg(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--json", metavar="PATH", default=None,
                    help="also write every printed figure to PATH as JSON (what is printed does not change)")


def write_json(path: str | None, bench: str, args: argparse.Namespace, records: list[dict], **extra) -> None:
    """Write ``{"bench", "torch", "threads", "cpu_capability", "args", **extra, "records"}`` to ``path`` (nothing when
    ``path`` is None), through a temporary file so that a reader never sees half a file."""
    if not path:
        return
    doc = {"bench": bench, "torch": torch.__version__, "threads": torch.get_num_threads(),
           "cpu_capability": torch.backends.cpu.get_cpu_capability(),
           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
           "args": {k: v for k, v in vars(args).items() if k != "json"}, **extra, "records": records}
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    os.replace(tmp, path)
