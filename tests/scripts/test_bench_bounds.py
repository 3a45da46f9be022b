"""benchmarks/bench_bounds.py runs (one round) and its JSON renders as the README's bound rows."""
import json
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

import performance_table as P  # noqa: E402


@pytest.mark.timeout(300)
def test_bench_bounds_one_round(tmp_path):
    out = tmp_path / "bounds.json"
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_bounds.py"), "--rounds", "1", "--json",
                        str(out)], capture_output=True, text=True, cwd=ROOT, timeout=280,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    doc = json.loads(out.read_text())
    rows = {rec["row"] for rec in doc["records"]}
    assert rows == {"call", "kernels", "attention"}
    calls = {rec["what"]: rec["us"] for rec in doc["records"] if rec["row"] == "call"}
    assert set(calls) == {"whole call", "signature lookup", "inductor's callable", "ATen add"}
    assert all(v > 0 for v in calls.values())  # figures only: no timing is asserted
    assert all(rec["x_add"] > 0 for rec in doc["records"] if rec["row"] == "kernels")
    rendered = P.bounds_rows(doc)
    assert len(rendered) == 4 and all("µs" in v or "×" in v or "ms" in v for _, v in rendered)
