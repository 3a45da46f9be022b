"""AdaComp with the compressed message on the wire: every rank sends its packed indices + signs + per-layer scales
to every other rank (an all-gather of variable-length uint8 messages, as an all-to-all with per-rank split sizes),
and each rank decodes all P messages and sums them in FP32. The result is the emulated hook's (dense decoded
message, then FP32 all-reduce of the mean): bit-identical at P = 2, equal up to the FP32 summation order at P > 2.

Message of one rank for one DDP bucket (tensors i = 1..T, n_i entries, k_i selected):

    int32 k_1..k_T | float32 scale_1..scale_T | block_1 | ... | block_T
    block_i = the words (index << 1 | sign) of the selected entries, each w_i + 1 bits with w_i = max(1,
              ceil(log2 n_i)), packed LSB first (``wire_codec.pack_bits``), ceil(k_i (w_i + 1) / 8) bytes

i.e. ``adacomp.message_bytes`` plus the 4-byte count k_i per layer. Before it, an all-gather of one int64 per rank
(the message lengths, so receivers size their buffers; -1 announces a non-finite gradient: then every rank
all-reduces the bucket in FP32 uncompressed and no residue changes, as the emulated hook does on its own rank).
"""
from __future__ import annotations

import math

import torch

from . import comm
from .adacomp import AdaCompCompressor, AdaCompStep
from .wire_codec import pack_bits, packed_nbytes, unpack_bits


def index_bits(n: int) -> int:
    """Bits of an index into n entries, as in ``adacomp.message_bytes``."""
    return max(1, math.ceil(math.log2(n))) if n > 1 else 1


def encode_message(steps: list[AdaCompStep]) -> torch.Tensor:
    """The uint8 message of one bucket (layout in the module docstring)."""
    ks = torch.tensor([s.selected for s in steps], dtype=torch.int32)
    scales = torch.tensor([s.scale for s in steps], dtype=torch.float32)
    parts = [ks.view(torch.uint8), scales.view(torch.uint8)]
    for s in steps:
        idx = s.mask.nonzero().reshape(-1)
        neg = (s.sent[idx] < 0).to(torch.int64)
        parts.append(pack_bits((idx << 1) | neg, index_bits(s.numel) + 1))
    return torch.cat(parts)


def decode_message(msg: torch.Tensor, numels: list[int]) -> torch.Tensor:
    """The dense float32 gradient message (concatenated over the bucket's tensors) of a uint8 message."""
    T = len(numels)
    if msg.dtype != torch.uint8 or msg.numel() < 8 * T:
        raise ValueError(f"AdaComp message: a uint8 header of {8 * T} bytes needed, got {msg.numel()} {msg.dtype}")
    ks = msg[: 4 * T].clone().view(torch.int32).tolist()  # clone: an aligned copy of a slice at any offset
    if any(not 0 <= k <= n for k, n in zip(ks, numels)):
        raise ValueError(f"AdaComp message: selected counts {ks} outside the layers' sizes {numels}")
    size = 8 * T + sum(packed_nbytes(k, index_bits(n) + 1) for k, n in zip(ks, numels))
    if size != msg.numel():
        raise ValueError(f"AdaComp message of {msg.numel()} bytes, its header describes {size}")
    scales = msg[4 * T: 8 * T].clone().view(torch.float32)
    out = torch.zeros(sum(numels), dtype=torch.float32)
    pos, off = 8 * T, 0
    for i, (n, k) in enumerate(zip(numels, ks)):
        w = index_bits(n) + 1
        nb = packed_nbytes(k, w)
        if k:
            words = unpack_bits(msg[pos:pos + nb], w, k)
            idx, neg = words >> 1, (words & 1).bool()
            if bool((idx >= n).any()):
                raise ValueError(f"AdaComp message: index out of range for a layer of {n} entries")
            s = scales[i]
            out[off + idx] = torch.where(neg, -s, s)
        pos += nb
        off += n
    return out


@torch.no_grad()
def wire_adacomp(compressor: AdaCompCompressor, counter: comm.WireCounter, flat: torch.Tensor,
                 layers: list[tuple[int, tuple[int, ...]]], *, group=None) -> tuple[torch.Tensor, bool]:
    """Average ``flat`` (the bucket's gradients, layers = [(key, shape), ...] in order) through AdaComp messages.
    Returns (the averaged float32 tensor, compressed?)."""
    import torch.distributed as dist

    P, rank = dist.get_world_size(group), dist.get_rank(group)
    numels = [math.prod(shape) for _, shape in layers]
    if sum(numels) != flat.numel():
        raise ValueError(f"layers cover {sum(numels)} entries, the buffer has {flat.numel()}")
    finite = bool(torch.isfinite(flat).all())
    steps, msg = [], None
    if finite:
        off = 0
        for (k, shape), n in zip(layers, numels):
            steps.append(compressor.peek(k, flat[off:off + n], shape))
            off += n
        msg = encode_message(steps)
    length = torch.tensor([msg.numel() if finite else -1], dtype=torch.int64)
    lengths = comm.all_gather(length, counter, group=group).tolist()
    if min(lengths) < 0:
        out = flat.float() / P
        comm.all_reduce(out, counter, group=group)
        return out, False
    for (k, shape), st in zip(layers, steps):
        compressor.commit(k, st, shape)
    in_splits = [0 if r == rank else msg.numel() for r in range(P)]
    out_splits = [0 if r == rank else lengths[r] for r in range(P)]
    send = msg.repeat(P - 1) if P > 1 else msg[:0]
    recv = comm.all_to_all(send, counter, in_splits, out_splits, group=group)
    acc, pos = None, 0
    for r in range(P):
        if r == rank:
            dense = decode_message(msg, numels)
        else:
            dense = decode_message(recv[pos:pos + lengths[r]], numels)
            pos += lengths[r]
        acc = dense / P if acc is None else acc + dense / P
    return acc, True
