"""The low-precision all-reduce with the encoded payload on the wire: a reduce-scatter of format codes (all-to-all
of uint8) with the senders' per-tensor scales, FP32 decode-and-sum by each chunk's owner, then an all-gather of the
owners' re-encoded chunks (uint8). The numerics are those of ``LowpAllreduceCodec.encode`` / ``decode`` (the
emulated hook): the FP32 values every rank ends with are bit-identical to the emulated hook's at P = 2, and
differ at P > 2 only by the order of the FP32 sum (rank order here, gloo's ring order there).

For one DDP bucket (flat gradient of n entries, tensors k = 1..T of the model) on P ranks:

1. encode: per tensor, x = g (+ error-feedback residue), s_k = current_scale(x) (1 for unscaled formats),
   v = Q(x · s_k) (``saturate=True``, the codec's rounding and random bits), codes = bit patterns of v
   (``wire_codec.encode``), packed at the format's width (FP8: one byte per entry, FP4: two per byte).
   The flat codes are cut into P chunks of c entries (c a multiple of 8, so chunks start on byte boundaries).
2. all-to-all (uint8): rank r sends chunk j, followed by its T scales (float32 bytes), to rank j.
3. owner j decodes every sender's chunk, q_r = v_r / s_{r,k}, and sums q_r / P in FP32 in rank order.
4. all-reduce (MAX) of T float32: the per-tensor amax of the averaged tensor (+inf marks a non-finite one).
5. owner re-encodes its chunk with s'_k = amax_scale(amax_k): v' = Q(avg · s'_k) (stochastic: random bits of the
   whole tensor keyed by (seed, step, tensor), identical on every rank, as in the emulated hook).
6. all-gather (uint8) of the encoded chunks; every rank decodes avg_q = v' / s'_k.

Bytes one rank sends (P > 1): (P-1)/P·(packed n) + (P-1)·4T (scales) + 2(P-1)/P·4T (amax) + (P-1)/P·(packed n),
against 2(P-1)/P·4n for the FP32 ring all-reduce: the ratio is 32/bits less the scales.

Where the emulated hook would pass a non-finite tensor through unquantized, this protocol does the same without
extra traffic in the finite case: a non-finite input on any rank is announced by a NaN scale in step 2, and then
all ranks all-reduce the bucket in FP32 uncompressed (no error-feedback update), as ``none`` would (the loss
scaler skips that step anyway; the emulated hook differs here: it quantizes the finite tensors of the bucket and
stores x - q as residue). A sum that overflows is caught by the amax of step 4; the averaged chunks are then
all-gathered in FP32 and each tensor is finished exactly as the emulated hook finishes it.
"""
from __future__ import annotations

import math

import torch

from ..scaling import amax_scale
from . import comm
from .lowp_allreduce import LowpAllreduceCodec
from .wire_codec import decode, encode, packed_nbytes


def chunk_len(n: int, nproc: int) -> int:
    """Entries per rank's chunk: ceil(n / P) rounded up to a multiple of 8 (byte-aligned for every width)."""
    return max(8, 8 * math.ceil(n / nproc / 8))


def _tensor_index(numels: list[int]) -> torch.Tensor:
    return torch.repeat_interleave(torch.arange(len(numels)), torch.tensor(numels, dtype=torch.int64))


@torch.no_grad()
def wire_allreduce(codec: LowpAllreduceCodec, counter: comm.WireCounter, flat: torch.Tensor,
                   keys: list[tuple[int, int]], step: int, *, group=None) -> tuple[torch.Tensor, bool]:
    """Average ``flat`` (the concatenation of the tensors ``keys`` = [(key, numel), ...]) over the ranks through
    the encoded protocol above. Returns (the averaged float32 tensor, compressed?) — compressed is False when a
    non-finite input made every rank fall back to the FP32 all-reduce."""
    import torch.distributed as dist

    P, rank = dist.get_world_size(group), dist.get_rank(group)
    fmt, bits, T = codec.fmt, codec.bits, len(keys)
    numels = [n for _, n in keys]
    n = sum(numels)
    if n != flat.numel():
        raise ValueError(f"keys cover {n} entries, the buffer has {flat.numel()}")
    offs = [0]
    for m in numels:
        offs.append(offs[-1] + m)
    c = chunk_len(n, P)
    cb = packed_nbytes(c, bits)

    # 1. encode
    vals = torch.zeros(P * c, dtype=torch.float32)  # values on the grid; the padding is +0 (code 0)
    scales = torch.ones(T, dtype=torch.float32)
    new_err = {}
    for i, (k, m) in enumerate(keys):
        x = codec.message_input(k, flat[offs[i]:offs[i + 1]])
        if not bool(torch.isfinite(x).all()):
            scales[i] = math.nan
            continue
        v, s = codec.grid_values(x, codec.rounding, codec.phase1_generator(k, step))
        vals[offs[i]:offs[i + 1]] = v.reshape(-1)
        if s is not None:
            scales[i] = s
        if codec.error_feedback:
            new_err[k] = x - (v / s if s is not None else v)
    packed = encode(vals, fmt).view(P, cb)
    sbytes = scales.view(torch.uint8).expand(P, 4 * T)
    send = torch.cat([packed, sbytes], 1).reshape(-1)

    # 2. all-to-all: chunk j + my scales to rank j
    w = cb + 4 * T
    recv = comm.all_to_all(send, counter, [w] * P, [w] * P, group=group).view(P, w)
    rscales = recv[:, cb:].clone().view(torch.float32)  # (P, T); clone: aligned
    if bool(torch.isnan(rscales).any()):
        out = flat.float() / P
        comm.all_reduce(out, counter, group=group)
        return out, False
    codec.errors.update(new_err)

    # 3. decode and sum my chunk
    lo, hi = min(rank * c, n), min((rank + 1) * c, n)
    tidx_all = _tensor_index(numels)
    tidx = tidx_all[lo:hi]
    acc = None
    for r in range(P):
        v = decode(recv[r, :cb], fmt, c)[: hi - lo]
        q = v / rscales[r][tidx] if codec.scaled else v
        acc = q / P if acc is None else acc + q / P

    # 4. amax of the average per tensor (+inf: non-finite somewhere)
    amax = torch.zeros(T, dtype=torch.float32)
    if hi > lo:
        a = torch.where(torch.isfinite(acc), acc.abs(), torch.full_like(acc, math.inf))
        amax.scatter_reduce_(0, tidx, a, "amax")
    comm.all_reduce(amax, counter, op=dist.ReduceOp.MAX, group=group)
    if not bool(torch.isfinite(amax).all()):
        buf = torch.zeros(c, dtype=torch.float32)
        buf[: hi - lo] = acc
        avg = comm.all_gather(buf, counter, group=group)[:n]
        out = torch.empty(n, dtype=torch.float32)
        for i, (k, _) in enumerate(keys):
            out[offs[i]:offs[i + 1]] = codec.decode(k, avg[offs[i]:offs[i + 1]], step)
        return out, True

    # 5. re-encode my chunk with the scale of the averaged tensor
    s2 = amax_scale(amax, codec.fmt_max) if codec.scaled else None
    z = acc * s2[tidx] if s2 is not None else acc
    if codec.rounding == "nearest":
        v2 = fmt.quantize(z, "nearest", saturate=True)
    else:  # the random bits of the whole tensor, as the emulated hook draws them
        v2 = torch.empty_like(z)
        for i, (k, m) in enumerate(keys):
            a0, a1 = max(lo, offs[i]), min(hi, offs[i + 1])
            if a0 >= a1:
                continue
            whole = torch.zeros(m, dtype=torch.float32)
            whole[a0 - offs[i]:a1 - offs[i]] = z[a0 - lo:a1 - lo]
            whole = fmt.quantize(whole, codec.rounding, saturate=True, generator=codec.phase2_generator(k, step))
            v2[a0 - lo:a1 - lo] = whole[a0 - offs[i]:a1 - offs[i]]
    mine = torch.zeros(c, dtype=torch.float32)
    mine[: hi - lo] = v2

    # 6. all-gather the encoded chunks, decode
    allp = comm.all_gather(encode(mine, fmt), counter, group=group)
    out = decode(allp, fmt, P * c)[:n]
    if s2 is not None:
        out = out / s2[tidx_all]
    return out, True
