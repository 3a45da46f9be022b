"""``run_data_parallel`` runs the training loop of ``train_run`` (``lowp.experiments.train.train_epochs``) in every
rank: the global batch is sharded, a final batch smaller than the number of ranks is skipped by all ranks, and the
per-epoch technique reports (PACT alpha) and the numerics collector come back as in a single-process run."""
import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.timeout(600)  # multi-process

SCRIPT = """
import json
from lowp.experiments.parallel import run_data_parallel
from lowp.experiments.train import RunSettings
out = {}
# digits-mlp has 1437 training samples: batches of 359 leave a final batch of 1 sample, skipped with 2 ranks
for rec, kw in (("fp8-hybrid", dict(numerics_every=3)), ("pact-w4a4", {})):
    d = run_data_parallel("digits-mlp", rec, RunSettings("digits-mlp", seed=0, epochs=2, lr=0.1, batch_size=359),
                          nproc=2, hook="none", timeout_s=240, **kw)
    out[rec] = {k: d[k] for k in ("steps", "history", "numerics", "replica_max_abs_diff", "diverged", "extras")}
print(json.dumps(out))
"""


def test_data_parallel_run_uses_the_training_loop():
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    for d in out.values():
        assert d["steps"] == 2 * 4 and not d["diverged"] and d["replica_max_abs_diff"] == 0.0
        assert len(d["history"]) == 2 and all(h["train_loss"] > 0 for h in d["history"])
        assert d["extras"] == {}  # no technique with run metrics (AutoSparse) in these recipes
    numerics = out["fp8-hybrid"]["numerics"]
    assert {r["step"] for r in numerics} == {0, 3, 6} and {"layer", "role", "sqnr_db"} <= set(numerics[0])
    assert "pact_alpha" not in out["fp8-hybrid"]["history"][-1]
    first, alpha = (out["pact-w4a4"]["history"][i]["pact_alpha"] for i in (0, -1))
    assert alpha and all(0 < v < 100 for v in alpha.values())
    assert first != alpha  # alpha trains in the data-parallel run too: it moved between the epochs
