"""benchmarks/bench_native_ceiling.py builds its C kernels, finds them giving lowp's bits (it exits 1 and times
nothing when they do not) and writes its figures; without a C compiler it says so and exits 0."""
import json
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "bench_native_ceiling.py"


def run(tmp_path, *args, env=None):
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=280, env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})


@pytest.mark.timeout(300)
@pytest.mark.skipif(not (shutil.which("cc") or shutil.which("gcc")), reason="no C compiler")
def test_native_kernels_give_lowps_bits_and_are_timed(tmp_path):
    out = tmp_path / "ceiling.json"
    r = run(tmp_path, "--rounds", "1", "--calls", "2", "--shapes", "64x32,96x64", "--json", str(out))
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    recs = json.loads(out.read_text())["records"]
    assert [rec["shape"] for rec in recs] == ["64x32", "96x64"]
    for rec in recs:  # figures only: no timing is asserted
        assert rec["mx lowp us"] > 0 and rec["mx native us"] > 0 and rec["fp8-mul native us"] > 0
        assert 0.0 <= rec["fp8 mul differs"] <= 1.0


def test_bad_shape_and_missing_compiler(tmp_path):
    r = run(tmp_path, "--shapes", "64x30")
    assert r.returncode != 0 and "64x30" in (r.stdout + r.stderr)
    r = run(tmp_path, env={"CC": str(tmp_path / "no-such-cc")})
    assert r.returncode == 0 and "skipped" in r.stdout
