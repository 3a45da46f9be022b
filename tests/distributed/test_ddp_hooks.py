"""Two processes on loopback (gloo): DDP with the identity hook reproduces single-process training on the same
global batch, every hook trains, replicas stay in sync; a dead / failing / hanging worker is a clear error.

Tolerance of the equivalence: the only difference between DDP (each rank: mean over its 16 samples, then
(g0/2 + g1/2) summed by gloo) and one process (mean over the 32 samples) is the FP32 summation order, a relative
error of a few 1e-7 per step; after 30 SGD steps with momentum the parameters (|w| ~ 0.1..1) agree within 1e-5.
A wrong averaging (sum instead of mean, one shard only) moves them by ~1e-2 or more.

Multi-process: every test has a pytest-timeout. The dead/hanging-worker tests keep their other workers asleep for an
hour, so a launcher that waited for them instead of ending the run would be stopped by that timeout.
"""
import os
import time

import pytest
import torch
from torch import nn

from lowp.distributed import launch

pytestmark = pytest.mark.timeout(600)

WIRE = ["adacomp:10:100", "allreduce:bf16", "allreduce:e5m2", "allreduce:e4m3:stochastic", "allreduce:e4m3:ef",
        "allreduce:e2m1:stochastic:ef"]
HOOKS = ["none"] + WIRE + [h + ":emulated" for h in WIRE]
STEPS, BATCH, LR = 30, 32, 0.1


def _data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(BATCH * STEPS, 20, generator=g)
    w = torch.randn(20, 4, generator=g)
    y = (x @ w).argmax(1)
    return x, y


def _model():
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, 4))


def _train(model, step_fn, x, y):
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9)
    for s in range(STEPS):
        xb, yb = x[s * BATCH:(s + 1) * BATCH], y[s * BATCH:(s + 1) * BATCH]
        opt.zero_grad()
        step_fn(xb, yb).backward()
        opt.step()


def _full_loss(model, x, y):
    with torch.no_grad():
        return float(nn.functional.cross_entropy(model(x), y))


def _worker(rank, nproc):
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP
    from lowp.distributed import register_comm_hook
    from lowp.distributed.launch import shard

    x, y = _data()
    out = {}
    for hook in HOOKS:
        model = _model()
        ddp = DDP(model)
        state = register_comm_hook(ddp, hook, seed=3)
        idx = torch.arange(BATCH)
        mine = shard(idx, rank, nproc)
        before = _full_loss(model, x, y)
        _train(ddp, lambda xb, yb: nn.functional.cross_entropy(ddp(xb[mine]), yb[mine]), x, y)
        flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
        other = flat.clone()
        dist.broadcast(other, src=0)
        out[hook] = {"params": [p.detach().clone() for p in model.parameters()], "before": before,
                     "after": _full_loss(model, x, y), "sync_diff": float((flat - other).abs().max()),
                     "comm": state.summary()}
    return out


@pytest.fixture(scope="module")
def ddp_results():
    return launch(_worker, 2, timeout_s=120, init_timeout_s=60)


def test_identity_hook_reproduces_single_process(ddp_results):
    x, y = _data()
    single = _model()
    _train(single, lambda xb, yb: nn.functional.cross_entropy(single(xb), yb), x, y)
    for rank in (0, 1):
        got = ddp_results[rank]["none"]["params"]
        diff = max(float((a - b).abs().max()) for a, b in zip(got, [p.detach() for p in single.parameters()]))
        assert diff <= 1e-5, f"rank {rank}: DDP(none) differs from one process by {diff}"
    moved = max(float((a - b).abs().max()) for a, b in zip(got, [p.detach() for p in _model().parameters()]))
    assert moved > 1e-2  # training moved the weights far more than the tolerance


def test_every_hook_trains_and_replicas_agree(ddp_results):
    r0 = ddp_results[0]
    for hook in HOOKS:
        res = r0[hook]
        assert res["after"] < 0.8 * res["before"], f"{hook}: loss {res['before']:.3f} -> {res['after']:.3f}"
        assert ddp_results[1][hook]["sync_diff"] == 0.0, f"{hook}: replicas diverged"
        assert res["comm"]["steps"] == STEPS


def test_wire_hooks_equal_the_emulated_hooks_bit_for_bit(ddp_results):
    """At P = 2 the encoded protocols compute the emulated hooks' numbers exactly (FP32 a + b is commutative), so
    30 steps of training end with bit-identical parameters."""
    for rank in (0, 1):
        for h in WIRE:
            wire, emu = ddp_results[rank][h]["params"], ddp_results[rank][h + ":emulated"]["params"]
            assert all(torch.equal(a, b) for a, b in zip(wire, emu)), f"{h}: wire and emulated hooks differ"


def _fp8_wire_bytes(n, T, bits, P=2):
    """Bytes one rank sends in the encoded all-reduce (lowp.distributed.wire_allreduce docstring)."""
    c = max(8, 8 * -(-n // (P * 8)))
    cb = -(-c * bits // 8)
    return (P - 1) * (cb + 4 * T) + 2 * (P - 1) * 4 * T // P + (P - 1) * cb


def test_compression_accounting(ddp_results):
    c = {h: ddp_results[0][h]["comm"] for h in HOOKS}
    n, T = 20 * 32 + 32 + 32 * 4 + 4, 4
    for h in HOOKS:
        assert c[h]["dense_bytes_per_step"] == 4 * n  # 2(P-1)/P = 1 at P = 2
        assert c[h]["uncompressed_buckets"] == 0
    assert c["none"]["compression_ratio"] == 1.0 and c["none"]["bytes_per_step"] == 4 * n
    for h in WIRE:  # emulated hooks: FP32 on the wire, the message size only estimated
        e = c[h + ":emulated"]
        assert e["bytes_per_step"] == 4 * n and e["compression_ratio"] == 1.0
        assert e["message_bytes_per_step"] == c[h]["message_bytes_per_step"]
    for h, bits in (("allreduce:bf16", 16), ("allreduce:e5m2", 8), ("allreduce:e4m3:ef", 8),
                    ("allreduce:e2m1:stochastic:ef", 4)):
        assert c[h]["bytes_per_step"] == _fp8_wire_bytes(n, T, bits), h
        assert set(c[h]["collectives"]) == {"all_to_all", "all_reduce", "all_gather"}
        assert c[h]["collectives"]["all_to_all"]["calls"] == STEPS
    assert c["allreduce:e5m2"]["compression_ratio"] > 3.7
    assert c["allreduce:e2m1:stochastic:ef"]["compression_ratio"] > 7
    ada = c["adacomp:10:100"]
    assert ada["compression_ratio"] > 5
    # AdaComp on the wire: the lengths (8 bytes) + the message, which is the estimate + 4 bytes (count) per layer
    assert ada["bytes_per_step"] == 8 + ada["message_bytes_per_step"] + 4 * T
    layers = {row["layer"]: row for row in ada["layers"]}
    assert layers["0.weight"]["bin"] == 100 and layers["0.bias"]["bin"] == 10


def _dies(rank, nproc):
    if rank == 1:
        os._exit(3)
    time.sleep(3600)


def _raises(rank, nproc):
    if rank == 1:
        raise ValueError("boom in worker")
    import torch.distributed as dist
    dist.barrier()  # waits for rank 1, which is gone: ended by the launcher, not by a hang


def _hangs(rank, nproc):
    time.sleep(3600)


@pytest.mark.timeout(300)
def test_dead_worker_is_a_clear_error_not_a_hang():
    with pytest.raises(RuntimeError, match="rank 1 .*exited with code 3"):
        launch(_dies, 2, timeout_s=3000, init_timeout_s=20)
    with pytest.raises(RuntimeError, match="rank 1 failed: ValueError: boom in worker"):
        launch(_raises, 2, timeout_s=3000, init_timeout_s=20)


@pytest.mark.timeout(300)
def test_overrunning_run_times_out():
    with pytest.raises(TimeoutError, match="did not finish within 8 s"):
        launch(_hangs, 2, timeout_s=8, init_timeout_s=20)
