"""Captured ops under FSDP2 (torch.distributed.fsdp.fully_shard), 2 CPU processes (gloo): emulate, then shard;
the sharded gradients equal the single-process emulated ones bit for bit, and coverage sees every GEMM."""
import copy
import os
import tempfile

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

import lowp

pytestmark = pytest.mark.timeout(600)  # multi-process


class Conv1D(nn.Module):  # HF GPT-2 style addmm layer: captured, not swapped
    def __init__(self, i, o):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(i, o) * 0.1)
        self.bias = nn.Parameter(torch.zeros(o))

    def forward(self, x):
        return torch.addmm(self.bias, x.reshape(-1, x.shape[-1]), self.weight).reshape(*x.shape[:-1], -1)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = Conv1D(32, 32)
        self.b = nn.Linear(32, 32)

    def forward(self, x):
        h = self.a(x)
        return self.b(torch.nn.functional.scaled_dot_product_attention(h, h, h, is_causal=True))


def _worker(rank, world, path, out):
    os.environ["LOWP_COMPILE"] = "0"
    dist.init_process_group("gloo", init_method=f"file://{path}", rank=rank, world_size=world)
    try:
        from torch.distributed.fsdp import fully_shard

        torch.manual_seed(0)
        m = Net()
        ref = lowp.emulate(copy.deepcopy(m), "bf16")
        x = torch.randn(2, 8, 32)
        ref(x).square().mean().backward()
        lowp.emulate(m, "bf16")
        fully_shard(m.a)
        fully_shard(m.b)
        fully_shard(m)
        m(x).square().mean().backward()
        ok = all(torch.equal(p.grad.full_tensor(), q.grad) for p, q in zip(m.parameters(), ref.parameters()))
        cov = lowp.coverage(m, x)
        torch.save({"ok": ok, "frac": cov.emulated_fraction, "names": [r.name for r in cov.rows]},
                   f"{out}.{rank}")
        dist.barrier()  # both ranks done before gloo is torn down
    finally:
        dist.destroy_process_group()


def test_fsdp2_sharded_emulated_model(tmp_path):
    path = tempfile.mktemp(dir=tmp_path)
    out = str(tmp_path / "res")
    mp.spawn(_worker, args=(2, path, out), nprocs=2, join=True)
    for rank in range(2):
        r = torch.load(f"{out}.{rank}", weights_only=True)
        assert r["ok"] and r["frac"] == 1.0
        assert r["names"] == ["a", "sdpa.qk", "sdpa.pv", "b"]
