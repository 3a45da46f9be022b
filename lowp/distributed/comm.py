"""lowp's own collective calls, each counted: the bytes of every tensor handed to torch.distributed, the bytes this
rank sends to its peers, and the wall time of blocking calls.

Every collective the gradient hooks make goes through the functions here (``all_reduce``, ``all_gather``,
``all_to_all``), which take the :class:`WireCounter` to charge explicitly (no global state, no patching of
torch). Bytes sent by one rank per call, for P ranks and a tensor of b bytes given by this rank, are those of the
bandwidth-optimal algorithms gloo runs (checked against the kernel's count of bytes the process wrote to its sockets,
``/proc/self/io`` ``wchar``, in tests/distributed/test_wire.py):

    all_reduce (ring: reduce-scatter + all-gather)   2 (P-1)/P · b
    all_gather (ring, b per rank)                    (P-1) · b
    all_to_all (b split into P parts)                b - the part addressed to this rank

``os_bytes_written()`` reads that kernel counter (Linux; None elsewhere): an independent measurement that includes
gloo's message headers and anything else the process writes.
"""
from __future__ import annotations

import dataclasses
import time

import torch
import torch.distributed as dist


@dataclasses.dataclass
class OpTally:
    calls: int = 0
    given_bytes: int = 0    # bytes of the tensors this rank handed to torch.distributed
    sent_bytes: int = 0     # bytes this rank sent to its peers (see the module docstring)
    seconds: float = 0.0    # wall time of the blocking calls (asynchronous ones are not timed)


@dataclasses.dataclass
class WireCounter:
    """Per-rank tally, per collective, of the calls made through this module."""

    ops: dict[str, OpTally] = dataclasses.field(default_factory=dict)

    def add(self, op: str, given: int, sent: int, seconds: float | None) -> None:
        t = self.ops.setdefault(op, OpTally())
        t.calls += 1
        t.given_bytes += given
        t.sent_bytes += sent
        t.seconds += seconds or 0.0

    @property
    def given_bytes(self) -> int:
        return sum(t.given_bytes for t in self.ops.values())

    @property
    def sent_bytes(self) -> int:
        return sum(t.sent_bytes for t in self.ops.values())

    @property
    def seconds(self) -> float:
        return sum(t.seconds for t in self.ops.values())

    @property
    def calls(self) -> int:
        return sum(t.calls for t in self.ops.values())

    def by_op(self) -> dict[str, dict]:
        return {k: dataclasses.asdict(v) for k, v in self.ops.items()}

    def reset(self) -> None:
        self.ops.clear()


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def _world(group) -> tuple[int, int]:
    return dist.get_world_size(group), dist.get_rank(group)


def all_reduce(t: torch.Tensor, counter: WireCounter, *, op=dist.ReduceOp.SUM, group=None, async_op: bool = False):
    """``dist.all_reduce`` in place, counted; with ``async_op`` returns the work handle (time not recorded)."""
    p, _ = _world(group)
    b = _nbytes(t)
    sent = 2 * (p - 1) * b // p
    if async_op:
        counter.add("all_reduce", b, sent, None)
        return dist.all_reduce(t, op=op, group=group, async_op=True)
    t0 = time.perf_counter()
    dist.all_reduce(t, op=op, group=group)
    counter.add("all_reduce", b, sent, time.perf_counter() - t0)
    return None


def all_gather(t: torch.Tensor, counter: WireCounter, *, group=None) -> torch.Tensor:
    """Concatenation (along dim 0) of every rank's ``t`` (same shape and dtype on all ranks), rank order."""
    p, _ = _world(group)
    out = torch.empty((p * t.shape[0], *t.shape[1:]), dtype=t.dtype)
    t0 = time.perf_counter()
    gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor  # the older name before 2.13
    gather(out, t.contiguous(), group=group)
    counter.add("all_gather", _nbytes(t), (p - 1) * _nbytes(t), time.perf_counter() - t0)
    return out


def all_to_all(t: torch.Tensor, counter: WireCounter, in_splits: list[int], out_splits: list[int], *,
               group=None) -> torch.Tensor:
    """``dist.all_to_all_single``: part r of ``t`` (``in_splits[r]`` rows) goes to rank r; returns the received
    parts back to back (``out_splits[r]`` rows from rank r)."""
    p, rank = _world(group)
    if len(in_splits) != p or len(out_splits) != p or sum(in_splits) != t.shape[0]:
        raise ValueError(f"all_to_all: {p} splits summing to {t.shape[0]} rows needed, got {in_splits}")
    out = torch.empty((sum(out_splits), *t.shape[1:]), dtype=t.dtype)
    row = _nbytes(t[:1]) if t.shape[0] else 0
    t0 = time.perf_counter()
    dist.all_to_all_single(out, t.contiguous(), output_split_sizes=list(out_splits),
                           input_split_sizes=list(in_splits), group=group)
    counter.add("all_to_all", _nbytes(t), _nbytes(t) - in_splits[rank] * row, time.perf_counter() - t0)
    return out


def os_bytes_written() -> int | None:
    """Bytes this process has written so far (sockets included), from ``/proc/self/io``; None where unavailable."""
    try:
        with open("/proc/self/io") as f:
            for line in f:
                if line.startswith("wchar:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None

