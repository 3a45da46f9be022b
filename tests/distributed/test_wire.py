"""Bytes on the wire: float-format codes bit for bit against ml_dtypes, bit packing, AdaComp messages; on 2 gloo
processes the encoded protocols against the emulated ones (non-finite fallbacks included), and the counted bytes
against the kernel's count of bytes the process wrote (``/proc/self/io``)."""
import math

import ml_dtypes
import numpy as np
import pytest
import torch

from lowp.distributed import launch
from lowp.distributed.adacomp import AdaCompCompressor, adacomp_compress, message_bytes
from lowp.distributed.wire_adacomp import decode_message, encode_message
from lowp.distributed.wire_codec import (decode, encode, float_codes, float_values, pack_bits, torch_dtype_of,
                                        unpack_bits)
from lowp.formats import get_format

ORACLES = {"e4m3": ml_dtypes.float8_e4m3fn, "e5m2": ml_dtypes.float8_e5m2, "e4m3fnuz": ml_dtypes.float8_e4m3fnuz,
           "e5m2fnuz": ml_dtypes.float8_e5m2fnuz, "e2m1": ml_dtypes.float4_e2m1fn, "e3m2": ml_dtypes.float6_e3m2fn,
           "e2m3": ml_dtypes.float6_e2m3fn, "bf16": ml_dtypes.bfloat16, "fp16": np.float16}


@pytest.mark.parametrize("name", list(ORACLES))
def test_float_codes_are_ml_dtypes_bit_patterns(name):
    fmt = get_format(name)
    bits = fmt.total_bits
    patterns = np.arange(2**bits, dtype=np.uint16 if bits > 8 else np.uint8)
    values = torch.from_numpy(patterns.view(ORACLES[name]).astype(np.float32))
    nan = torch.isnan(values)
    codes = float_codes(values, fmt)
    assert codes.dtype == torch.int32
    assert torch.equal(codes[~nan].long(), torch.from_numpy(patterns.astype(np.int64))[~nan])
    back = float_values(codes, fmt)
    assert torch.equal(back[~nan].view(torch.int32), values[~nan].view(torch.int32))  # -0 included
    assert torch.isnan(back[nan]).all()
    # the packed bytes: torch's cast (FP8, BF16, FP16) or pack_bits, both equal to the codes packed LSB first
    fin = values[~nan]
    packed = encode(fin, fmt)
    assert torch.equal(packed, pack_bits(codes[~nan], bits))
    assert torch.equal(decode(packed, fmt, fin.numel()).view(torch.int32), fin.view(torch.int32))
    assert (torch_dtype_of(fmt) is not None) == (name in ("e4m3", "e5m2", "e4m3fnuz", "e5m2fnuz", "bf16", "fp16"))
    # every NaN pattern decodes to NaN, and a NaN encodes to one of them
    if nan.any():
        assert int(float_codes(torch.tensor([math.nan]), fmt)) in set(patterns[nan.numpy()].tolist())


def test_float_codes_reject_off_grid_and_unencodable():
    with pytest.raises(ValueError, match="not on the grid of e4m3"):
        float_codes(torch.tensor([1.0, 1.0625]), get_format("e4m3"))
    with pytest.raises(ValueError, match="not on the grid"):
        float_codes(torch.tensor([1000.0]), get_format("e4m3"))  # above max 448
    with pytest.raises(ValueError, match="no encoding for NaN"):
        float_codes(torch.tensor([math.nan]), get_format("e2m1"))
    with pytest.raises(ValueError, match="FloatFormat"):
        float_codes(torch.tensor([1.0]), get_format("int8"))


@pytest.mark.parametrize("width", [1, 3, 4, 6, 8, 11, 16, 17, 32])
def test_pack_unpack_round_trip(width):
    g = torch.Generator().manual_seed(width)
    for count in (0, 1, 7, 8, 9, 1001):
        v = torch.randint(0, 2**width, (count,), generator=g, dtype=torch.int64)
        buf = pack_bits(v, width)
        assert buf.dtype == torch.uint8 and buf.numel() == -(-count * width // 8)
        assert torch.equal(unpack_bits(buf, width, count), v)
    # LSB first: 4-bit codes 0x1, 0x2 share one byte 0x21
    assert pack_bits(torch.tensor([1, 2]), 4).tolist() == [0x21]
    with pytest.raises(ValueError, match="0..15"):
        pack_bits(torch.tensor([16]), 4)


def test_adacomp_message_round_trip_and_size():
    gen = torch.Generator().manual_seed(0)
    shapes = [(32, 1, 5), (32,), (10, 160), (1,)]
    comp = AdaCompCompressor(50, 500)
    for _ in range(3):
        steps = [comp.peek(k, torch.randn(shape, generator=gen), shape) for k, shape in enumerate(shapes)]
        for k, (shape, st) in enumerate(zip(shapes, steps)):
            comp.commit(k, st, shape)
        msg = encode_message(steps)
        assert msg.numel() == sum(message_bytes(s.numel, s.selected) + 4 for s in steps)
        dense = decode_message(msg, [s.numel for s in steps])
        assert torch.equal(dense, torch.cat([s.sent for s in steps]))
    with pytest.raises(ValueError, match="header describes"):
        decode_message(msg[:-1], [s.numel for s in steps])
    st = adacomp_compress(torch.zeros(100), None, 50)  # nothing selected: header only
    assert encode_message([st]).numel() == 8


# --------------------------------------------------------------------------------------------- two processes

N_SHAPES = [(40, 20), (40,), (7, 3, 5), (3,)]


def _grads(rank, step, scale=1.0):
    g = torch.Generator().manual_seed(1000 * rank + step)
    return [torch.randn(s, generator=g) * scale * (10.0 ** (i - 2)) for i, s in enumerate(N_SHAPES)]


def _emulated_allreduce(codec, flat, keys, step, P):
    import torch.distributed as dist
    offs = np.cumsum([0] + [n for _, n in keys])
    msg = torch.cat([codec.encode(k, flat[offs[i]:offs[i + 1]], step) for i, (k, _) in enumerate(keys)]) / P
    dist.all_reduce(msg)
    return torch.cat([codec.decode(k, msg[offs[i]:offs[i + 1]], step) for i, (k, _) in enumerate(keys)])


def _emulated_adacomp(comp, flat, layers, P):
    import torch.distributed as dist
    out, off = [], 0
    for k, shape in layers:
        n = math.prod(shape)
        out.append(comp.compress(k, flat[off:off + n], shape).reshape(-1))
        off += n
    msg = torch.cat(out) / P
    dist.all_reduce(msg)
    return msg


def _io_written():
    from lowp.distributed.comm import os_bytes_written
    return os_bytes_written()


def _protocol_worker(rank, P):
    from lowp.distributed import comm
    from lowp.distributed.lowp_allreduce import LowpAllreduceCodec
    from lowp.distributed.wire_adacomp import wire_adacomp
    from lowp.distributed.wire_allreduce import wire_allreduce

    keys = [(i, math.prod(s)) for i, s in enumerate(N_SHAPES)]
    T = len(keys)
    layers = list(enumerate(N_SHAPES))
    out = {"mismatch": [], "fallback": {}, "io": []}
    codecs = {}
    for fmt, rounding, ef in (("e4m3", "nearest", True), ("e5m2", "stochastic", False), ("e2m1", "stochastic", True),
                              ("bf16", "nearest", False)):
        wire_c = LowpAllreduceCodec(fmt, rounding, error_feedback=ef, seed=5, rank=rank)
        emu_c = LowpAllreduceCodec(fmt, rounding, error_feedback=ef, seed=5, rank=rank)
        codecs[fmt] = wire_c
        counter = comm.WireCounter()
        for step in range(4):
            flat = torch.cat([g.reshape(-1) for g in _grads(rank, step)])
            w0 = _io_written()
            got, compressed = wire_allreduce(wire_c, counter, flat, keys, step)
            w1 = _io_written()
            ref = _emulated_allreduce(emu_c, flat.clone(), keys, step, P)
            if not (compressed and torch.equal(got, ref)):
                out["mismatch"].append((fmt, rounding, step))
            if w0 is not None:
                out["io"].append((fmt, w1 - w0))
        out[f"counter:{fmt}"] = counter.by_op()
    wire_a, emu_a = AdaCompCompressor(10, 100), AdaCompCompressor(10, 100)
    counter = comm.WireCounter()
    for step in range(4):
        flat = torch.cat([g.reshape(-1) for g in _grads(rank, step)])
        w0 = _io_written()
        got, compressed = wire_adacomp(wire_a, counter, flat, layers)
        w1 = _io_written()
        ref = _emulated_adacomp(emu_a, flat.clone(), layers, P)
        if not (compressed and torch.equal(got, ref)):
            out["mismatch"].append(("adacomp", step))
        if w0 is not None:
            out["io"].append(("adacomp", w1 - w0))
    out["counter:adacomp"] = counter.by_op()
    out["adacomp_message"] = wire_a.bytes
    # a non-finite gradient on rank 1 only: every rank falls back to the FP32 all-reduce, no residue changes
    flat = torch.cat([g.reshape(-1) for g in _grads(rank, 9)])
    if rank == 1:
        flat[3] = math.inf
    residues = {k: v.clone() for k, v in wire_a.residues.items()}
    got, compressed = wire_adacomp(wire_a, comm.WireCounter(), flat, layers)
    out["fallback"]["adacomp"] = (compressed, bool(torch.isinf(got[3])),
                                  all(torch.equal(residues[k], wire_a.residues[k]) for k in residues))
    ef = codecs["e4m3"]
    errors = {k: v.clone() for k, v in ef.errors.items()}
    got, compressed = wire_allreduce(ef, comm.WireCounter(), flat, keys, 9)
    out["fallback"]["allreduce"] = (compressed, bool(torch.isinf(got[3])),
                                    len(errors) == T and all(torch.equal(errors[k], ef.errors[k]) for k in errors))
    return out


@pytest.fixture(scope="module")
def protocol():
    return launch(_protocol_worker, 2, timeout_s=180, init_timeout_s=60)


def test_encoded_protocols_equal_emulated_bit_for_bit(protocol):
    for r in protocol:
        assert r["mismatch"] == []


def test_non_finite_gradient_on_one_rank_falls_back_on_all(protocol):
    for r in protocol:
        assert r["fallback"]["adacomp"] == (False, True, True)
        assert r["fallback"]["allreduce"] == (False, True, True)


def test_counted_bytes_match_protocol_and_kernel_count(protocol):
    n, T = sum(math.prod(s) for s in N_SHAPES), len(N_SHAPES)
    for r in protocol:
        for fmt, bits in (("e4m3", 8), ("e5m2", 8), ("e2m1", 4), ("bf16", 16)):
            c = r[f"counter:{fmt}"]
            chunk = 8 * -(-n // 16)
            cb = chunk * bits // 8
            assert c["all_to_all"]["given_bytes"] == 4 * 2 * (cb + 4 * T)
            assert c["all_to_all"]["sent_bytes"] == 4 * (cb + 4 * T)
            assert c["all_gather"]["given_bytes"] == c["all_gather"]["sent_bytes"] == 4 * cb
            assert c["all_reduce"]["sent_bytes"] == 4 * 4 * T
        a = r["counter:adacomp"]
        assert a["all_gather"]["sent_bytes"] == 4 * 8
        assert a["all_to_all"]["sent_bytes"] == r["adacomp_message"] + 4 * 4 * T  # own message only (P = 2)
    # the kernel's count of bytes written (sockets: payload + gloo's headers) is at least the counted bytes and at
    # most a few hundred bytes per collective more
    io = protocol[0]["io"]
    if not io:
        pytest.skip("no /proc/self/io here")
    sent = {}
    for fmt in ("e4m3", "e5m2", "e2m1", "bf16", "adacomp"):
        c = protocol[0][f"counter:{fmt}"]
        sent[fmt] = (sum(v["sent_bytes"] for v in c.values()), sum(v["calls"] for v in c.values()))
    for fmt, (total, calls) in sent.items():
        measured = sum(b for f, b in io if f == fmt)
        assert total <= measured <= total + 400 * calls, (fmt, total, measured, calls)
