"""DDP communication hooks (``DistributedDataParallel.register_comm_hook``) with byte accounting.

Hook names (``parse_hook``)::

    none                                   plain FP32 all-reduce of the mean (what DDP does without a hook)
    adacomp[:CONV_BIN[:FC_BIN]][:emulated] AdaComp residual compression (lowp.distributed.adacomp), bins 50 / 500
    allreduce:FORMAT[:nearest|:stochastic][:ef][:emulated]
                                           gradients cast to FORMAT (float formats: bf16, e5m2, e4m3, fp16, e2m1,
                                           ...; per-tensor scaling for narrow formats) before and after the
                                           all-reduce (lowp.distributed.lowp_allreduce); ``ef``: error feedback

Every hook works on the bucket's flat buffer, parameter by parameter (the buffer holds the bucket's parameters'
gradients back to back, in ``bucket.parameters()`` order), so "per layer" means per parameter tensor. State is
keyed by the parameter's position in ``model.parameters()``, which survives DDP's bucket rebuild after the first
iteration.

The compressed hooks send the encoded messages (``wire_allreduce``: format codes + scales, reduce-scatter by
all-to-all and all-gather of uint8; ``wire_adacomp``: packed indices + signs + scales) and run synchronously
inside the hook (the collectives block the backward pass; for the small models here the last bucket is the only
one). ``:emulated`` keeps the reference implementation: the dense decoded message all-reduced in FP32 (the same
numbers, FP32 bytes on the wire). Every collective goes through ``lowp.distributed.comm`` and is counted in
``state.counter``: ``summary()`` reports the bytes this rank really handed to / sent through torch.distributed.

A non-finite gradient (on any rank, for the wire hooks) makes the bucket go through an FP32 all-reduce
uncompressed (AdaComp residues untouched), so that a loss scaler sees the overflow and skips the step.
"""
from __future__ import annotations

import dataclasses

import torch
import torch.distributed as dist

from ..formats.float import FloatFormat
from . import comm
from .adacomp import CONV_BIN, FC_BIN, AdaCompCompressor
from .lowp_allreduce import LowpAllreduceCodec
from .wire_adacomp import wire_adacomp
from .wire_allreduce import wire_allreduce

HOOK_GRAMMAR = "none | adacomp[:CONV_BIN[:FC_BIN]][:emulated] | allreduce:FORMAT[:nearest|:stochastic][:ef][:emulated]"


@dataclasses.dataclass(frozen=True)
class HookSpec:
    """A parsed hook name."""

    kind: str                       # none | adacomp | allreduce
    fmt: str | None = None
    rounding: str = "nearest"
    error_feedback: bool = False
    conv_bin: int = CONV_BIN
    fc_bin: int = FC_BIN
    wire: bool = True               # send the encoded message (False: ``:emulated``, FP32 on the wire)

    @property
    def name(self) -> str:
        if self.kind == "none":
            return "none"
        tail = "" if self.wire else ":emulated"
        if self.kind == "adacomp":
            return ("adacomp" if (self.conv_bin, self.fc_bin) == (CONV_BIN, FC_BIN) else
                    f"adacomp:{self.conv_bin}:{self.fc_bin}") + tail
        s = f"allreduce:{self.fmt}"
        if self.rounding != "nearest":
            s += f":{self.rounding}"
        return s + (":ef" if self.error_feedback else "") + tail


def parse_hook(name: str | HookSpec | None) -> HookSpec:
    """Parse a hook name (see module docstring); ValueError with the grammar on a bad one."""
    if isinstance(name, HookSpec):
        return name
    if name is None:
        return HookSpec("none")
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"a gradient hook is a non-empty name, got {name!r}; valid: {HOOK_GRAMMAR}")
    parts = [p.strip() for p in name.strip().split(":")]
    head = parts[0].lower()
    wire = True
    if len(parts) > 1 and parts[-1].lower() == "emulated" and head != "none":
        parts, wire = parts[:-1], False

    def bad(why: str) -> ValueError:
        return ValueError(f"bad gradient hook {name!r}: {why}; valid: {HOOK_GRAMMAR}")

    if head == "none":
        if len(parts) > 1:
            raise bad("'none' takes no options")
        return HookSpec("none")
    if head == "adacomp":
        if len(parts) > 3:
            raise bad("too many options")
        try:
            bins = [int(p) for p in parts[1:]]
        except ValueError:
            raise bad("bin lengths must be integers") from None
        if any(b < 1 for b in bins):
            raise bad("bin lengths must be >= 1")
        conv = bins[0] if bins else CONV_BIN
        fc = bins[1] if len(bins) > 1 else FC_BIN
        return HookSpec("adacomp", conv_bin=conv, fc_bin=fc, wire=wire)
    if head == "allreduce":
        if len(parts) < 2 or not parts[1]:
            raise bad("allreduce needs a format, e.g. allreduce:e5m2")
        from ..formats import get_format
        from ..formats.float import FloatFormat
        from .lowp_allreduce import format_bits

        try:
            fmt = get_format(parts[1])
            format_bits(fmt)
        except ValueError as e:
            raise bad(str(e).split(";")[0]) from None
        if wire and not isinstance(fmt, FloatFormat):
            raise bad(f"the encoded all-reduce sends float formats; {fmt.name!r} is a {type(fmt).__name__} "
                      f"(use ':emulated')")
        rounding, ef = "nearest", False
        for opt in parts[2:]:
            o = opt.lower()
            if o in ("nearest", "stochastic"):
                rounding = o
            elif o in ("ef", "error-feedback"):
                ef = True
            else:
                raise bad(f"unknown option {opt!r}")
        return HookSpec("allreduce", fmt=fmt.name, rounding=rounding, error_feedback=ef, wire=wire)
    raise bad(f"unknown hook {parts[0]!r}")


class CommState:
    """State of a registered hook: the compressor / codec, step counter, the counter of this rank's collectives."""

    def __init__(self, spec: HookSpec, model: torch.nn.Module, *, process_group=None, seed: int = 0) -> None:
        self.spec = spec
        self.process_group = process_group
        self.world_size = dist.get_world_size(process_group)
        self.rank = dist.get_rank(process_group)
        self.keys = {id(p): i for i, p in enumerate(model.parameters())}
        self.names = {i: n for i, (n, _) in enumerate(model.named_parameters())}
        self.steps = 0
        self.uncompressed_buckets = 0
        self.dense_bytes = 0
        self._plain_bytes = 0
        self.counter = comm.WireCounter()
        self.compressor = AdaCompCompressor(spec.conv_bin, spec.fc_bin) if spec.kind == "adacomp" else None
        self.codec = (LowpAllreduceCodec(spec.fmt, spec.rounding, error_feedback=spec.error_feedback, seed=seed,
                                         rank=self.rank) if spec.kind == "allreduce" else None)
        if self.codec is not None and spec.wire and not isinstance(self.codec.fmt, FloatFormat):
            raise ValueError(f"the encoded all-reduce sends float formats, got {self.codec.fmt.name!r}; "
                             f"use {spec.name + ':emulated'!r}")

    def key(self, p: torch.Tensor) -> int:
        k = self.keys.get(id(p))
        if k is None:
            raise RuntimeError("a bucket holds a parameter that is not in the model the hook was registered for")
        return k

    @property
    def message_bytes(self) -> int:
        """Size of the compressed messages (the codec's / compressor's estimate; 4 per entry for ``none``)."""
        c = self.compressor or self.codec
        return self._plain_bytes + (c.bytes if c is not None else 0)

    def summary(self) -> dict:
        """Per step: ``bytes_per_step`` (bytes this rank sent through torch.distributed, counted per collective by
        ``lowp.distributed.comm``), ``given_bytes_per_step`` (bytes of the tensors handed to the collectives),
        ``dense_bytes_per_step`` (what the FP32 ring all-reduce of the same gradients sends per rank:
        2(P-1)/P · 4 bytes per entry), ``compression_ratio`` (dense / sent), ``message_bytes_per_step`` (the
        estimated compressed message), ``comm_s_per_step`` (wall time of the blocking collectives), the
        per-collective tally and, for AdaComp, the per-layer rates."""
        steps = max(1, self.steps)
        ring = 2 * (self.world_size - 1) / self.world_size
        sent = self.counter.sent_bytes / steps
        dense = ring * self.dense_bytes / steps
        d = {"grad_hook": self.spec.name, "wire": self.spec.wire, "steps": self.steps, "nproc": self.world_size,
             "bytes_per_step": sent, "given_bytes_per_step": self.counter.given_bytes / steps,
             "dense_bytes_per_step": dense, "compression_ratio": dense / sent if sent else None,
             "message_bytes_per_step": self.message_bytes / steps,
             "comm_s_per_step": self.counter.seconds / steps, "collectives": self.counter.by_op(),
             "uncompressed_buckets": self.uncompressed_buckets}
        if self.compressor is not None:
            layers = self.compressor.summary()
            for row in layers:
                row["layer"] = self.names.get(int(row["layer"]), row["layer"])
            d["layers"] = layers
        return d


def _params_and_views(bucket) -> list[tuple[torch.Tensor, torch.Tensor]]:
    buf = bucket.buffer()
    out, off = [], 0
    for p in bucket.parameters():
        n = p.numel()
        out.append((p, buf[off:off + n]))
        off += n
    if off != buf.numel():
        raise RuntimeError(f"bucket buffer has {buf.numel()} entries, its parameters {off}")
    return out


def _allreduce_mean(state: CommState, buf: torch.Tensor, then=None) -> torch.futures.Future:
    buf.div_(state.world_size)
    work = comm.all_reduce(buf, state.counter, group=state.process_group, async_op=True)
    fut = work.get_future()
    if then is None:
        return fut.then(lambda f: f.value()[0])
    return fut.then(lambda f: then(f.value()[0]))


def _done(buf: torch.Tensor) -> torch.futures.Future:
    fut = torch.futures.Future()
    fut.set_result(buf)
    return fut


def _finish(state: CommState, bucket) -> None:
    if bucket.is_last():
        state.steps += 1


def none_hook(state: CommState, bucket):  # no return annotation: DDP checks it literally
    """FP32 mean all-reduce (DDP's default)."""
    buf = bucket.buffer()
    state._plain_bytes += 4 * buf.numel()
    state.dense_bytes += 4 * buf.numel()
    _finish(state, bucket)
    return _allreduce_mean(state, buf)


def adacomp_hook(state: CommState, bucket):  # no return annotation: DDP checks it literally
    """AdaComp on the wire (``wire_adacomp``): packed indices + signs + scales to every rank, decoded and summed."""
    buf = bucket.buffer()
    layers = [(state.key(p), tuple(p.shape)) for p, _ in _params_and_views(bucket)]
    out, compressed = wire_adacomp(state.compressor, state.counter, buf, layers, group=state.process_group)
    if not compressed:
        state.uncompressed_buckets += 1
        state._plain_bytes += 4 * buf.numel()
    state.dense_bytes += 4 * buf.numel()
    _finish(state, bucket)
    return _done(buf.copy_(out))


def allreduce_hook(state: CommState, bucket):  # no return annotation: DDP checks it literally
    """Low-precision all-reduce on the wire (``wire_allreduce``): format codes reduce-scattered, re-encoded average
    all-gathered."""
    buf = bucket.buffer()
    keys = [(state.key(p), view.numel()) for p, view in _params_and_views(bucket)]
    out, compressed = wire_allreduce(state.codec, state.counter, buf, keys, state.steps, group=state.process_group)
    if compressed:
        for _, n in keys:
            state.codec.count_message(n)
    else:
        state.uncompressed_buckets += 1
        state._plain_bytes += 4 * buf.numel()
    state.dense_bytes += 4 * buf.numel()
    _finish(state, bucket)
    return _done(buf.copy_(out))


def emulated_adacomp_hook(state: CommState, bucket):  # no return annotation: DDP checks it literally
    """AdaComp, emulated: replace each parameter's gradient by its decoded AdaComp message, then all-reduce the
    mean in FP32 (the reference of ``adacomp_hook``)."""
    buf = bucket.buffer()
    if not bool(torch.isfinite(buf).all()):
        state.uncompressed_buckets += 1
        return none_hook(state, bucket)
    for p, view in _params_and_views(bucket):
        view.copy_(state.compressor.compress(state.key(p), view, tuple(p.shape)).reshape(-1))
    state.dense_bytes += 4 * buf.numel()
    _finish(state, bucket)
    return _allreduce_mean(state, buf)


def emulated_allreduce_hook(state: CommState, bucket):  # no return annotation: DDP checks it literally
    """Low-precision all-reduce, emulated: quantize each parameter's gradient (phase 1), all-reduce the mean in
    FP32, quantize the result (phase 2) (the reference of ``allreduce_hook``)."""
    buf = bucket.buffer()
    step = state.steps
    pv = _params_and_views(bucket)
    for p, view in pv:
        view.copy_(state.codec.encode(state.key(p), view, step))
    state.dense_bytes += 4 * buf.numel()
    _finish(state, bucket)
    keys = [(state.key(p), view.numel()) for p, view in pv]

    def phase2(avg: torch.Tensor) -> torch.Tensor:
        off = 0
        for k, n in keys:
            seg = avg[off:off + n]
            seg.copy_(state.codec.decode(k, seg, step))
            off += n
        return avg

    return _allreduce_mean(state, buf, phase2)


_HOOKS = {("none", True): none_hook, ("adacomp", True): adacomp_hook, ("allreduce", True): allreduce_hook,
          ("adacomp", False): emulated_adacomp_hook, ("allreduce", False): emulated_allreduce_hook}


def register_comm_hook(ddp_model, hook: str | HookSpec | None, *, seed: int = 0, process_group=None) -> CommState:
    """Register the named hook on a ``DistributedDataParallel`` model; returns its :class:`CommState` (byte counts
    via ``state.summary()``). The process group must be initialised."""
    spec = parse_hook(hook)
    state = CommState(spec, ddp_model.module, process_group=process_group, seed=seed)
    ddp_model.register_comm_hook(state, _HOOKS[(spec.kind, spec.kind == "none" or spec.wire)])
    return state
