"""Two torchrun "nodes" on localhost (``--nnodes 2 --nproc-per-node 1``, node ranks 0 and 1, static rendezvous at
127.0.0.1): ``lowp.experiments.torchrun`` trains recipes data-parallel with the encoded e4m3 all-reduce, rank 0
writes a comparison in ``lowp compare``'s format, and the result equals ``run_data_parallel`` (the spawn launcher
behind ``lowp compare --nproc 2``) with the same settings, epoch by epoch."""
import json
import os
import subprocess
import sys

from lowp.distributed.launch import free_port
from lowp.experiments.parallel import run_data_parallel
from lowp.experiments.train import RunSettings

ARGS = ["--task", "digits-mlp", "--recipes", "fp32,bf16", "--epochs", "1", "--lr", "0.1", "--batch-size", "64",
        "--grad-hook", "allreduce:e4m3", "--timeout-s", "120"]


def _node(rank: int, port: int, out: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1", "--node-rank",
           str(rank), "--master-addr", "127.0.0.1", "--master-port", str(port), "-m", "lowp.experiments.torchrun",
           *ARGS, "--out", out]
    env = {**os.environ, "LOWP_COMPILE": "0",
           "PYTHONPATH": os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


def test_two_torchrun_nodes_on_localhost(tmp_path, monkeypatch):
    out = str(tmp_path / "run")
    port = free_port()
    nodes = [_node(0, port, out), _node(1, port, out)]
    logs = []
    try:
        for p in nodes:
            logs.append(p.communicate(timeout=300)[0])
    finally:
        for p in nodes:
            if p.poll() is None:
                p.kill()
    for p, log in zip(nodes, logs):
        assert p.returncode == 0, log[-3000:]
    res = json.load(open(os.path.join(out, "results.json")))
    assert res["launcher"] == "torchrun" and res["nproc"] == 2 and res["grad_hook"] == "allreduce:e4m3"
    assert [r["recipe"] for r in res["results"]] == ["fp32", "bf16"]
    monkeypatch.setenv("LOWP_COMPILE", "0")  # as in the torchrun workers (spawned workers inherit it)
    for r in res["results"]:
        run = json.load(open(os.path.join(out, "runs", f"{r['recipe']}.json")))
        assert r["error"] is None and not r["diverged"] and r["metric"] > 0.3
        assert run["replica_max_abs_diff"] == 0.0 and run["compression_ratio"] > 3.5
        ref = run_data_parallel("digits-mlp", r["recipe"], RunSettings("digits-mlp", seed=0, epochs=1, lr=0.1,
                                                                        batch_size=64),
                                nproc=2, hook="allreduce:e4m3", timeout_s=240)
        assert ref["history"] == run["history"], r["recipe"]
