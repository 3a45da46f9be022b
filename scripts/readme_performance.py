"""Regenerate the README's Performance table: run the benchmarks in ``benchmarks/`` (each as a subprocess with
``--json``, under ``chrt -f 10`` where the machine allows real-time priority: steadier figures on a shared machine),
keep every number in docs/results/performance.json, and replace the README block between
``<!-- readme_performance:begin -->`` and ``<!-- readme_performance:end -->`` with the table rendered from them
(scripts/performance_table.py) and a line naming the command, date, machine and run time.

    PYTHONPATH=. python scripts/readme_performance.py [--quick] [--only NAME ...] [--no-rt]
                                                       [--cache PATH] [--readme PATH] [--compare-dir DIR]

``--only quantize emulate`` reruns those benchmarks and keeps the other rows from the cache. ``--quick`` runs small
sizes and few repeats: a smoke run, marked as such in the README, not figures to publish. The default comparison's
timings are not measured here: they are read from ``scripts/readme_compare.py``'s run folder (results.json and the
wall time it stamps) when it exists, and left out otherwise (the readme_compare block above the table has them).
Benchmark names: quantize, emulate, accumulate, inference, ktanh, stats, bounds.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import shlex
import shutil
import subprocess
import sys
import tempfile
import time

from performance_table import render
from replication import splice_readme

ROOT = pathlib.Path(__file__).resolve().parents[1]
TAG = "readme_performance"

# name: (script, arguments of the full run, arguments of --quick)
BENCHES: dict[str, tuple[str, list[str], list[str]]] = {
    "quantize": ("bench_quantize.py", [],
                 ["--sizes", "16", "--repeats", "2", "--formats", "bf16", "e4m3", "mxfp8_e4m3", "nvfp4", "int8"]),
    "emulate": ("bench_emulate.py", ["--recipes", "bf16,fp8-hybrid,mxfp8,nvfp4,fp8-ibm"],
                ["--recipes", "bf16,fp8-hybrid", "--tasks", "mlp", "--steps", "1", "--rounds", "1"]),
    "accumulate": ("bench_accumulate.py", ["--shapes", "256x784x1024", "--cases", "fp8-chunk64"],
                   ["--shapes", "32x128x128", "--cases", "fp8-chunk64", "--rounds", "1"]),
    "inference": ("bench_inference.py", [], ["--sizes", "256,512,256", "--repeats", "2"]),
    "ktanh": ("bench_ktanh.py", [], ["--log2n", "16", "--reps", "2"]),
    "stats": ("bench_stats.py", [], ["--steps", "4", "--rounds", "1"]),
    "bounds": ("bench_bounds.py", [], ["--rounds", "1"]),
}
COMPARE_DIR = "/tmp/lowp-readme-compare"  # scripts/readme_compare.py's default --out


def realtime_prefix() -> list[str]:
    """``chrt -f 10`` when the machine lets this process use real-time priority, else nothing."""
    if shutil.which("chrt") is None:
        return []
    ok = subprocess.run(["chrt", "-f", "10", "true"], capture_output=True).returncode == 0
    return ["chrt", "-f", "10"] if ok else []


def run_bench(name: str, quick: bool, rt: list[str]) -> dict:
    """Run one benchmark (its output passes through) and return its JSON, with the command and wall time added."""
    script, full, small = BENCHES[name]
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, f"{name}.json")
        cmd = [sys.executable, str(ROOT / "benchmarks" / script), *(small if quick else full), "--json", out]
        env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        print(f"== {name}: {shlex.join(rt + cmd)}", flush=True)
        t0 = time.perf_counter()
        r = subprocess.run(rt + cmd, cwd=str(ROOT), env=env)
        wall = time.perf_counter() - t0
        if r.returncode != 0 or not os.path.isfile(out):
            raise SystemExit(f"readme_performance: benchmark {name} failed (exit status {r.returncode}); "
                             "README and cache left as they were")
        doc = json.loads(pathlib.Path(out).read_text())
    doc.update(command=f"python benchmarks/{script} {shlex.join(small if quick else full)}".rstrip(),
               wall_s=round(wall, 1), quick=quick, realtime=bool(rt))
    return doc


def read_compare(folder: str) -> dict | None:
    """The default comparison's timings from scripts/readme_compare.py's run folder, or None when it is absent."""
    res = pathlib.Path(folder, "results.json")
    if not res.is_file():
        return None
    d = json.loads(res.read_text())
    stamp = pathlib.Path(folder, ".readme_wall_s")
    first = pathlib.Path(folder, ".torch_first_compile_s")  # torch's own first compilation, timed alone
    keys = ("recipe", "first_use_s", "step_s", "step_ratio", "wall_s")
    if not d.get("aggregate"):
        return None
    return {"source": str(res), "task": d.get("task"), "seeds": d.get("seeds", []), "epochs": d.get("epochs"),
            "reference": d.get("reference"),
            "date": time.strftime("%Y-%m-%d", time.gmtime(res.stat().st_mtime)),
            "wall_s": float(stamp.read_text()) if stamp.is_file() else None,
            "torch_first_compile_s": float(first.read_text()) if first.is_file() else None,
            "aggregate": [{k: a.get(k) for k in keys} for a in d["aggregate"]]}


def machine() -> dict:
    import torch

    model = ""
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cores": os.cpu_count(), "cpu": model, "torch": torch.__version__,
            "cpu_capability": torch.backends.cpu.get_cpu_capability()}


def stamp_line(cache: dict, ran: list[str], total_s: float, argv: list[str], cache_path: str) -> str:
    m = cache["machine"]
    cmd = " ".join(["PYTHONPATH=. python scripts/readme_performance.py", shlex.join(argv)]).rstrip()
    benches = cache["benches"]
    when = "; ".join(f"{n} {b['date']} ({b['wall_s']:.0f} s{', real-time priority' if b['realtime'] else ''})"
                     for n, b in benches.items())
    quick = any(b.get("quick") for b in benches.values())
    kept = [n for n in benches if n not in ran]
    return (("**Smoke run (`--quick`: small sizes, few repeats): not figures to quote.** " if quick else "")
            + f"Generated by `{cmd}` on {m['cores']} CPU cores ({m['cpu'] or 'model unknown'}, "
            f"{m['cpu_capability']}), torch {m['torch']}: {total_s:.0f} s for this run"
            + (f", which reran {', '.join(ran)} and kept {', '.join(kept)} from `{cache_path}`"
               if kept else "") + f". Each benchmark's date and wall time: {when}. Ratios vary between runs "
            "(timings): rerun before quoting one.")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes and few repeats (a smoke run)")
    ap.add_argument("--only", nargs="+", metavar="NAME", default=None,
                    help=f"rerun these benchmarks, keep the others from the cache ({', '.join(BENCHES)})")
    ap.add_argument("--no-rt", action="store_true", help="do not use chrt's real-time priority even if allowed")
    ap.add_argument("--cache", default=str(ROOT / "docs" / "results" / "performance.json"))
    ap.add_argument("--readme", default=str(ROOT / "README.md"))
    ap.add_argument("--compare-dir", default=COMPARE_DIR, help="scripts/readme_compare.py's run folder")
    args = ap.parse_args(argv)
    names = args.only or list(BENCHES)
    bad = [n for n in names if n not in BENCHES]
    if bad:
        raise SystemExit(f"readme_performance: unknown benchmark(s) {bad}; known: {', '.join(BENCHES)}")
    cache_path = pathlib.Path(args.cache)
    cache = json.loads(cache_path.read_text()) if args.only and cache_path.is_file() else {"benches": {}}
    rt = [] if args.no_rt else realtime_prefix()
    t0 = time.perf_counter()
    fresh = {n: run_bench(n, args.quick, rt) for n in names}
    total = time.perf_counter() - t0
    cache["benches"] = {n: fresh.get(n) or cache["benches"][n] for n in BENCHES
                        if n in fresh or n in cache["benches"]}
    cache["machine"] = machine()
    cache["compare"] = read_compare(args.compare_dir)
    res = dict(cache["benches"])
    if cache["compare"]:
        res["compare"] = cache["compare"]
    note = ("" if cache["compare"] else
            "The default `lowp compare`'s timings (wall time, first-use compilation, steady step × FP32) are in the "
            "`lowp compare` block above, written by `scripts/readme_compare.py`; run it before this script to "
            "have them in this table too.")
    shown = os.path.relpath(cache_path, ROOT) if cache_path.resolve().is_relative_to(ROOT) else str(cache_path)
    block = render(res, stamp_line(cache, names, total, argv, shown), note)
    cache_path.parent.mkdir(parents=True, exist_ok=True)
    cache_path.write_text(json.dumps(cache, indent=1) + "\n")
    splice_readme(TAG, block, args.readme)
    print(block)
    return 0


if __name__ == "__main__":
    sys.exit(main())
