"""The GPU scripts on a machine without a GPU: one clear line and exit status 2, nothing written."""
import os
import pathlib
import subprocess
import sys

import pytest
import torch

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present: the script measures instead")
def test_tensor_core_scaled_mm_without_gpu(tmp_path):
    out = tmp_path / "tc.md"
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "tensor_core_scaled_mm.py"), "--out", str(out)],
                       capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                       timeout=300)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        "tensor_core_scaled_mm: no CUDA device (torch.cuda.is_available() is False); nothing measured"]
    assert not out.exists()
