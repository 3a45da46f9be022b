"""Regenerate the README's `lowp compare` output: run the default comparison (no arguments) into a folder, time
it, and replace the README block between the markers below with the printed tables and the measured time.

    python scripts/readme_compare.py [--out DIR] [--note TEXT] [-- COMPARE-ARGS...]

DIR defaults to /tmp/lowp-readme-compare (emptied first unless --keep). COMPARE-ARGS (after ``--``) are passed to
``lowp compare``: only for a machine too slow for the default run; the README block then names them and says that
it is not the default run.

The run gets an empty compile cache of its own (``TORCHINDUCTOR_CACHE_DIR``, a fresh temporary folder), so its
first-use times are those of a fresh machine. Before it, torch's own first compilation is timed the same way (a
one-line ``torch.compile``'d function in another empty cache: the C++ compiler and vector-ISA probes and the
precompiled header that any first kernel pays) and stamped into DIR/.torch_first_compile_s.

Then `python scripts/report_screenshot.py DIR` renews docs/img/compare-report.png from the same report.
"""
from __future__ import annotations

import argparse
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

from replication import splice_readme

ROOT = pathlib.Path(__file__).resolve().parents[1]


def torch_first_compile_s(env: dict) -> float | None:
    """Seconds for a one-line ``torch.compile``'d function's first call in a fresh process with an empty compile
    cache: torch's own one-time cost (None if it fails)."""
    code = ("import time, torch\nt0 = time.perf_counter()\n"
            "torch.compile(lambda x: x * 2 + 1, dynamic=True, fullgraph=True)(torch.randn(64))\n"
            "print(time.perf_counter() - t0)")
    with tempfile.TemporaryDirectory(prefix="lowp-inductor-") as cache:
        r = subprocess.run([sys.executable, "-c", code], env={**env, "TORCHINDUCTOR_CACHE_DIR": cache},
                           capture_output=True, text=True)
    try:
        return float(r.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="/tmp/lowp-readme-compare")
    ap.add_argument("--note", default="", help="a sentence about the machine (e.g. 'shared with other jobs')")
    ap.add_argument("--keep", action="store_true", help="resume into an existing DIR (only rerenders; the time "
                                                        "measured by the run that trained is kept)")
    argv = sys.argv[1:]
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    args = ap.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    if not args.keep:
        shutil.rmtree(args.out, ignore_errors=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    torch_first = None if args.keep else torch_first_compile_s(env)
    with tempfile.TemporaryDirectory(prefix="lowp-inductor-") as cache:
        t0 = time.perf_counter()
        r = subprocess.run([sys.executable, "-m", "lowp", "compare", "--out", args.out, "--quiet", *extra],
                           cwd=str(ROOT), env={**env, "TORCHINDUCTOR_CACHE_DIR": cache}, capture_output=True,
                           text=True)
        wall = time.perf_counter() - t0
    if r.returncode != 0:
        sys.stderr.write(r.stdout + r.stderr)
        return r.returncode
    text = r.stdout.split("\nreport: ")[0].rstrip()
    stamp = pathlib.Path(args.out, ".readme_wall_s")
    first_stamp = pathlib.Path(args.out, ".torch_first_compile_s")
    if args.keep and stamp.is_file():
        wall = float(stamp.read_text())
        torch_first = float(first_stamp.read_text()) if first_stamp.is_file() else None
    else:
        stamp.write_text(f"{wall:.1f}\n")
        if torch_first is not None:
            first_stamp.write_text(f"{torch_first:.1f}\n")
    cores = os.cpu_count()
    note = f", {args.note}" if args.note else ""
    what = ("`lowp compare`" if not extra else
            f"**not the default run**: `lowp compare {' '.join(extra)}`, shortened because the machine was too slow "
            "for the default run")
    fresh = (f" The run had an empty compile cache, as a fresh machine has; torch's own first compilation, timed "
             f"alone the same way (a one-line function), takes {torch_first:.0f} s, and the first recipe that "
             "compiles pays it." if torch_first is not None else "")
    block = (f"Output of {what}. Measured: {wall:.0f} s wall for the whole run on {cores} CPU cores{note} "
             f"(`python scripts/readme_compare.py` reruns it and rewrites this block).{fresh}\n\n```\n{text}\n```")
    splice_readme("readme_compare", block, str(ROOT / "README.md"))
    print(block)
    return 0


if __name__ == "__main__":
    sys.exit(main())
