"""Bytes on the wire and communication time of the gradient hooks: mnist1d-cnn trained data-parallel (DDP, gloo,
loopback, CPU) on 2 and 4 processes with each hook, bytes counted by lowp.distributed.comm for every collective,
cross-checked by the kernel's count of bytes each process wrote (/proc/self/io wchar: gloo's socket writes with
their headers), and the time of one gradient exchange (the whole model's gradients, one bucket) measured alone.

    PYTHONPATH=$PWD python scripts/wire_bytes.py [--epochs 1] [--adacomp-epochs 10] [--reps 20] [--nprocs 2,4]

The FP8 / BF16 / FP4 messages have the same size every step; AdaComp's shrink as its residues build up, so its
bytes are averaged over a full training schedule (``--adacomp-epochs``, the 10 epochs of
docs/results/distributed.md). A second measurement exchanges a synthetic 2^20-entry gradient (4 MB in FP32), where
gloo's per-message headers no longer matter.

Writes docs/results/wire-bytes.md and docs/results/wire-bytes.json. Timings on a shared 2-core machine are noisy.
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import platform
import statistics
import time
from pathlib import Path

import torch

HOOKS = ["none", "allreduce:bf16", "allreduce:e5m2", "allreduce:e4m3", "allreduce:e4m3:stochastic:ef",
         "allreduce:e2m1:stochastic:ef", "adacomp"]
TASK, BATCH, LR = "mnist1d-cnn", 64, 0.1
_STATE: dict = {}  # per worker process: the codecs / compressors of the timed exchanges (residues persist)


def _exchange(hook: str, flat: torch.Tensor, keys, layers, step: int, rank: int, counter):
    """One gradient exchange of the whole model through ``hook``'s protocol (wire or emulated)."""
    import torch.distributed as dist

    from lowp.distributed import comm
    from lowp.distributed.adacomp import AdaCompCompressor
    from lowp.distributed.hooks import parse_hook
    from lowp.distributed.lowp_allreduce import LowpAllreduceCodec
    from lowp.distributed.wire_adacomp import wire_adacomp
    from lowp.distributed.wire_allreduce import wire_allreduce

    spec = parse_hook(hook)
    P = dist.get_world_size()
    if spec.kind == "none":
        out = flat / P
        comm.all_reduce(out, counter)
        return out
    if spec.kind == "adacomp":
        comp = _STATE.setdefault((hook, flat.numel()), AdaCompCompressor(spec.conv_bin, spec.fc_bin))
        if spec.wire:
            return wire_adacomp(comp, counter, flat, layers)[0]
        off, parts = 0, []
        for k, shape in layers:
            n = math.prod(shape)
            parts.append(comp.compress(k, flat[off:off + n], shape).reshape(-1))
            off += n
        out = torch.cat(parts) / P
        comm.all_reduce(out, counter)
        return out
    codec = _STATE.setdefault((hook, flat.numel()), LowpAllreduceCodec(spec.fmt, spec.rounding, rank=rank,
                                                                       error_feedback=spec.error_feedback))
    if spec.wire:
        return wire_allreduce(codec, counter, flat, keys, step)[0]
    offs = [0]
    for _, n in keys:
        offs.append(offs[-1] + n)
    out = torch.cat([codec.encode(k, flat[offs[i]:offs[i + 1]], step) for i, (k, _) in enumerate(keys)]) / P
    comm.all_reduce(out, counter)
    return torch.cat([codec.decode(k, out[offs[i]:offs[i + 1]], step) for i, (k, _) in enumerate(keys)])




BIG_HOOKS = ["none", "allreduce:bf16", "allreduce:e4m3", "allreduce:e2m1:stochastic:ef"]
BIG_SHAPES = [(512, 1024), (1024,), (256, 1024), (256,), (512, 512), (512,), (1000,), (8,)]


def worker(rank: int, P: int, epochs: int, adacomp_epochs: int, reps: int) -> dict:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    from lowp.distributed import comm, register_comm_hook
    from lowp.distributed.launch import shard
    from lowp.experiments.tasks import get_task

    task = get_task(TASK)
    data = task.load_data()
    torch.manual_seed(0)
    model0 = task.build_model()
    n = sum(p.numel() for p in model0.parameters())
    out = {"numel": n, "tensors": len(list(model0.parameters())), "runs": {}, "timing": {}}
    warm = 2
    per_epoch = len(data.x_train) // BATCH
    for hook in HOOKS + [h + ":emulated" for h in HOOKS if h != "none"]:
        steps = max(1, per_epoch * (adacomp_epochs if hook.startswith("adacomp") else epochs) - warm)
        model = copy.deepcopy(model0)
        ddp = DDP(model)
        state = register_comm_hook(ddp, hook, seed=1)
        opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9)

        def step(s):
            idx = shard(torch.arange(s * BATCH, (s + 1) * BATCH) % len(data.x_train), rank, P)
            opt.zero_grad()
            torch.nn.functional.cross_entropy(ddp(data.x_train[idx]), data.y_train[idx]).backward()
            opt.step()

        for s in range(warm):  # DDP rebuilds its buckets after the first step (a few collectives of its own)
            step(s)
        dist.barrier()
        sent0, given0, io0 = state.counter.sent_bytes, state.counter.given_bytes, comm.os_bytes_written()
        calls0 = state.counter.calls
        for s in range(warm, warm + steps):
            step(s)
        io1 = comm.os_bytes_written()
        sm = state.summary()
        out["runs"][hook] = {
            "steps": steps, "sent_per_step": (state.counter.sent_bytes - sent0) / steps,
            "given_per_step": (state.counter.given_bytes - given0) / steps,
            "os_written_per_step": None if io0 is None else (io1 - io0) / steps,
            "calls_per_step": (state.counter.calls - calls0) / steps,
            "message_bytes_per_step": sm["message_bytes_per_step"], "uncompressed_buckets": sm["uncompressed_buckets"],
            "params": torch.cat([p.detach().reshape(-1) for p in model.parameters()]),
        }
        dist.barrier()
    # the time of one exchange of the whole model's gradients, alone (no backward pass to overlap with)
    g = torch.Generator().manual_seed(rank)
    params = list(model0.parameters())
    keys = [(i, p.numel()) for i, p in enumerate(params)]
    layers = [(i, tuple(p.shape)) for i, p in enumerate(params)]
    for hook in HOOKS + [h + ":emulated" for h in HOOKS if h != "none"]:
        total, coll = [], []
        for r in range(reps + 2):
            flat = torch.cat([torch.randn(p.numel(), generator=g) * 0.01 for p in params])
            counter = comm.WireCounter()
            dist.barrier()
            t0 = time.perf_counter()
            _exchange(hook, flat, keys, layers, r, rank, counter)
            dt = time.perf_counter() - t0
            if r >= 2:
                total.append(dt)
                coll.append(counter.seconds)
        out["timing"][hook] = {"exchange_ms": 1e3 * statistics.median(total),
                               "collectives_ms": 1e3 * statistics.median(coll)}
    # one exchange, encoded vs emulated, on the same gradient (fresh states): the difference is the sum's order only
    out["one_exchange"] = {}
    for hook in HOOKS[1:]:
        flat = torch.cat([torch.randn(p.numel(), generator=torch.Generator().manual_seed(rank)) * 0.01
                          for p in params])
        got = []
        for h in (hook, hook + ":emulated"):
            _STATE.pop((h, flat.numel()), None)
            got.append(_exchange(h, flat.clone(), keys, layers, 0, rank, comm.WireCounter()))
        d = (got[0] - got[1]).abs()
        out["one_exchange"][hook] = {"max_abs_diff": float(d.max()), "entries_differing": int((d > 0).sum()),
                                     "max_abs": float(got[1].abs().max())}
    # a large synthetic gradient: bytes (counted and OS) and time of one exchange
    big = [torch.empty(s) for s in BIG_SHAPES]
    keys = [(i, p.numel()) for i, p in enumerate(big)]
    layers = [(i, tuple(p.shape)) for i, p in enumerate(big)]
    out["big"] = {"numel": sum(n for _, n in keys)}
    for hook in BIG_HOOKS:
        total, sent, written = [], [], []
        for r in range(max(3, reps // 4) + 1):
            flat = torch.randn(out["big"]["numel"], generator=g) * 0.01
            counter = comm.WireCounter()
            dist.barrier()
            w0, t0 = comm.os_bytes_written(), time.perf_counter()
            _exchange(hook, flat, keys, layers, 1000 + r, rank, counter)
            dt, w1 = time.perf_counter() - t0, comm.os_bytes_written()
            if r >= 1:
                total.append(dt)
                sent.append(counter.sent_bytes)
                written.append(None if w0 is None else w1 - w0)
        out["big"][hook] = {"exchange_ms": 1e3 * statistics.median(total), "sent": statistics.median(sent),
                            "os_written": None if written[0] is None else statistics.median(written)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=1, help="epochs of training measured (all hooks but AdaComp)")
    ap.add_argument("--adacomp-epochs", type=int, default=10, help="epochs of training measured for AdaComp")
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--nprocs", default="2,4")
    ap.add_argument("--out", default="docs/results/wire-bytes")
    ap.add_argument("--render-only", action="store_true", help="rewrite OUT.md from OUT.json")
    args = ap.parse_args()
    if args.render_only:
        d = json.loads(Path(args.out + ".json").read_text())
        Path(args.out + ".md").write_text(render(d["meta"], d["results"]))
        return
    from lowp.distributed import launch

    t_start = time.time()
    results = {}
    for P in [int(p) for p in args.nprocs.split(",")]:
        t0 = time.time()
        res = launch(worker, P, (args.epochs, args.adacomp_epochs, args.reps), timeout_s=3000, init_timeout_s=120)
        print(f"[wire] {P} processes: {time.time() - t0:.0f} s", flush=True)
        r0 = res[0]
        rows = {}
        for hook, run in r0["runs"].items():
            base = hook.removesuffix(":emulated")
            diff = None
            if hook != base:
                diff = float((run["params"] - r0["runs"][base]["params"]).abs().max())
            sync = max(float((r["runs"][hook]["params"] - run["params"]).abs().max()) for r in res)
            rows[hook] = {k: v for k, v in run.items() if k != "params"}
            rows[hook]["max_abs_diff_wire_vs_emulated"] = diff
            rows[hook]["replicas_in_sync"] = sync == 0.0
            rows[hook].update(r0["timing"][hook])
            rows[hook]["sent_per_step_by_rank"] = [r["runs"][hook]["sent_per_step"] for r in res]
        results[P] = {"numel": r0["numel"], "tensors": r0["tensors"], "rows": rows, "big": r0["big"],
                      "one_exchange": r0["one_exchange"]}
    meta = {"torch": torch.__version__, "machine": platform.machine(), "epochs": args.epochs,
            "adacomp_epochs": args.adacomp_epochs, "reps": args.reps,
            "task": TASK, "global_batch": BATCH, "seconds": round(time.time() - t_start, 1)}
    Path(args.out + ".json").write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    Path(args.out + ".md").write_text(render(meta, results))
    print(render(meta, results))


def render(meta: dict, results: dict) -> str:
    L = ["# Bytes on the wire: encoded gradient messages (issue 18, item 4)", "",
         f"Generated by `PYTHONPATH=$PWD python scripts/wire_bytes.py --epochs {meta['epochs']} --adacomp-epochs "
         f"{meta['adacomp_epochs']} --reps {meta['reps']}` "
         f"(torch {meta['torch']}, {meta['machine']}, 2 CPU cores shared with other jobs; {meta['seconds']} s).", "",
         f"{meta['task']} (FP32 model, no emulation) trained data-parallel with DDP (gloo, loopback TCP, 1 thread per process), "
         f"global batch {meta['global_batch']}, SGD lr 0.1 momentum 0.9; bytes per step averaged over {meta['epochs']} "
         f"epoch(s) ({meta['adacomp_epochs']} for AdaComp, whose messages shrink as its residues build up), after 2 "
         "warm-up steps. Every collective lowp makes goes through `lowp.distributed.comm`, which counts the bytes of "
         "the "
         "tensors handed to torch.distributed (`given`) and the bytes the rank sends to its peers (`sent`: all-reduce "
         "2(P-1)/P·b, all-gather (P-1)·b, all-to-all b minus its own part). `OS` is the kernel's count of bytes the "
         "process wrote in the same window (`/proc/self/io` wchar: gloo's socket writes including its message "
         "headers). Ratios are `none`'s bytes over the hook's bytes, both measured. `given` bytes are not comparable "
         "across collectives (an all-reduce sends 2(P-1)/P times its input, an all-gather (P-1) times, an "
         "all-to-all (P-1)/P times): the ratios use `sent`, which the OS count confirms.", ""]
    for P, r in results.items():
        rows = r["rows"]
        base = rows["none"]
        L += [f"## {P} processes ({r['numel']} parameters in {r['tensors']} tensors, one DDP bucket)", "",
              "| hook | sent B/step/rank | given B/step | OS-written B/step | ratio (sent) | ratio (OS) | "
              "collectives/step | exchange ms (collectives ms) | emulated exchange ms | wire vs emulated max abs Δ "
              "| replicas in sync |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
        for hook, row in rows.items():
            if hook.endswith(":emulated"):
                continue
            emu = rows.get(hook + ":emulated")
            os_ratio = (base["os_written_per_step"] / row["os_written_per_step"]
                        if row["os_written_per_step"] else None)
            L.append(f"| `{hook}` | {row['sent_per_step']:.0f} | {row['given_per_step']:.0f} | "
                     f"{row['os_written_per_step']:.0f} | {base['sent_per_step'] / row['sent_per_step']:.2f}× | "
                     f"{os_ratio:.2f}× | {row['calls_per_step']:g} | "
                     f"{row['exchange_ms']:.2f} ({row['collectives_ms']:.2f}) | "
                     f"{'-' if emu is None else format(emu['exchange_ms'], '.2f')} | "
                     f"{'-' if emu is None else format(emu['max_abs_diff_wire_vs_emulated'], '.3g')} | "
                     f"{'yes' if row['replicas_in_sync'] else 'NO'} |")
        L += ["", "One exchange of the same gradient (rank 0's result), encoded hook vs its `:emulated` reference: "
              + "; ".join(f"`{h}` max abs Δ {v['max_abs_diff']:.3g} ({v['entries_differing']} of {r['numel']} "
                          f"entries differ, max |value| {v['max_abs']:.3g})" for h, v in r["one_exchange"].items())
              + "."]
        big = r["big"]
        L += ["", f"Synthetic gradient of {big['numel']} entries ({4 * big['numel'] / 2**20:.0f} MB in FP32, "
              f"{len(BIG_SHAPES)} tensors), one exchange:", "",
              "| hook | sent B/rank | OS-written B | ratio (sent) | ratio (OS) | exchange ms |",
              "|---|---|---|---|---|---|"]
        b0 = big["none"]
        for hook in BIG_HOOKS:
            row = big[hook]
            osr = "-" if row["os_written"] is None else f"{b0['os_written'] / row['os_written']:.2f}×"
            L.append(f"| `{hook}` | {row['sent']:.0f} | {row['os_written'] or 0:.0f} | "
                     f"{b0['sent'] / row['sent']:.2f}× | {osr} | {row['exchange_ms']:.1f} |")
        L.append("")
    L += ["## Notes", "",
          "- `allreduce:FORMAT` sends format codes (FP8: one byte per entry; e2m1: two per byte; bf16: two bytes) in "
          "a reduce-scatter (all-to-all of uint8, each chunk followed by the sender's per-tensor FP32 scales), an "
          "all-reduce (MAX) of the averaged tensors' amax (one FP32 per tensor), and an all-gather of the owners' "
          "re-encoded chunks: 3 collectives per bucket instead of 1. `adacomp` sends its packed message (per layer "
          "a count, an FP32 scale, and index+sign words of ceil(log2 n)+1 bits) to every other rank after an "
          "all-gather of the message lengths: 2 collectives.",
          "- The FP32 numbers are those of the emulated hooks (`:emulated`: decoded message all-reduced in FP32): "
          "bit-identical at P = 2 (tests/distributed/test_ddp_hooks.py, test_wire.py; the max abs Δ column is 0 "
          "after the whole measured training); at P > 2 the decoded messages are summed in rank order while gloo's "
          "ring sums in its own order, so one exchange differs by the FP32 rounding of the sum (about one ulp of "
          "the values: the line under each table), and for scaled formats the phase-2 scale, computed from that sum's amax, can move by one ulp, which "
          "shifts many decoded entries by one ulp. Training carries such differences on: the max abs Δ column is "
          "the parameters' difference after the measured steps (AdaComp's discrete selection makes its two "
          "trajectories separate most).",
          "- The OS count is the counted bytes plus gloo's headers (≈100–250 bytes per message; a ring collective "
          "sends P−1 or 2(P−1) messages): with ~32 kB of gradients the extra collectives of the encoded protocols "
          "cost a visible share of the ratio (compare the two ratio columns, most at 4 processes); with the 4 MB "
          "gradient they vanish.",
          "- Exchange time: one exchange of the whole model's gradients alone (barrier, then the hook's protocol), "
          "median over the repetitions, rank 0; `collectives ms` is the part spent inside torch.distributed calls. "
          "At this size the exchange is latency-bound (each gloo collective costs ~0.1 ms or more on loopback and "
          "the encode / decode is a few dozen small torch ops), so fewer bytes do not make it faster. With the "
          "4 MB gradient the exchange is bound by lowp's quantize and the encode / decode on the CPU, not by "
          "loopback TCP (several GB/s), so the encoded hooks are slower than the FP32 all-reduce here too; they "
          "pay off where the link, not the CPU, is the bottleneck. Shared machine, other agents running: "
          "timings indicative only.", ""]
    return "\n".join(L)


if __name__ == "__main__":
    main()
