"""Bit-level encoding of gradient messages for the wire: float-format codes and packed fixed-width integers.

- ``float_codes(v, fmt)``: the bit patterns (sign | exponent | mantissa, ``fmt.total_bits`` wide, as int32) of
  float32 values that already lie on the grid of a lowp ``FloatFormat`` (the output of ``fmt.quantize``). For a
  value v = (-1)^s · 2^e · (1 + m / 2^man) with e >= emin the code is s·2^(bits-1) + (e + bias)·2^man + m; below
  emin (subnormal) the exponent field is 0 and m = |v| / 2^(emin - man). Zero is 0 (or the sign bit for -0, except
  fnuz, which has no -0). Inf and NaN are encoded as the format's patterns (ieee: all-ones exponent, mantissa 0 / 1;
  fn: all ones; fnuz: 0x80 for NaN). ``float_values`` is the exact inverse (bit-identical round trip for every
  value of the format). Same patterns as ml_dtypes / torch.float8_* / torch.bfloat16 (tested bit for bit).
- ``pack_bits(codes, width)`` / ``unpack_bits(buf, width, count)``: non-negative integers of ``width`` (1..32) bits
  stored back to back, least significant bit first, in a uint8 tensor of ceil(count·width / 8) bytes (FP4 codes
  two to a byte, FP6 four to three bytes, AdaComp's index+sign words at ceil(log2 n) + 1 bits).
- ``encode(v, fmt)`` / ``decode(buf, fmt, count)``: values <-> packed bytes. Formats that are a torch dtype
  (E4M3FN, E5M2, their fnuz variants, BF16, FP16) take torch's cast and a byte view (exact for values on the grid,
  little-endian, the same bytes as the general path, tested); other formats of <= 8 bits (FP4, FP6) a search in
  the sorted table of their values and a table lookup to decode; the rest ``pack_bits(float_codes(v))``.

Pure tensor code (no torch.distributed); sits on ``lowp.formats``.
"""
from __future__ import annotations

import functools

import torch

from ..formats.float import FloatFormat


def _check(fmt) -> FloatFormat:
    if not isinstance(fmt, FloatFormat):
        raise ValueError(f"wire encoding needs a lowp FloatFormat, got {getattr(fmt, 'name', fmt)!r} "
                         f"({type(fmt).__name__})")
    return fmt


def float_codes(v: torch.Tensor, fmt: FloatFormat) -> torch.Tensor:
    """int32 codes of the float32 tensor ``v`` (values on ``fmt``'s grid; a value off the grid is a ValueError)."""
    fmt = _check(fmt)
    if v.dtype != torch.float32:
        raise ValueError(f"float_codes takes float32 values, got {v.dtype}")
    man, bias, bits = fmt.man, fmt.bias, fmt.total_bits
    x = v.reshape(-1).double()
    a = x.abs()
    neg = torch.signbit(x)
    if fmt.special == "fnuz":
        neg = neg & (a != 0)  # no -0
    mant, e = torch.frexp(a)          # a = mant · 2^e, mant in [0.5, 1)
    e = e.to(torch.int64) - 1         # a = (2·mant) · 2^e
    normal = e >= fmt.emin
    # normal: m = (a / 2^e - 1) · 2^man ; subnormal: m = a / 2^(emin - man)
    m_norm = (torch.ldexp(a, (man - e).to(torch.float64)) - 2.0**man)
    m_sub = torch.ldexp(a, torch.full_like(a, float(man - fmt.emin)))
    m = torch.where(normal, m_norm, m_sub)
    efield = torch.where(normal, e + bias, torch.zeros_like(e))
    finite = torch.isfinite(x)
    off_grid = (m != torch.floor(m)) | (m < 0) | (m >= 2.0**man) | (efield > 2**fmt.exp - 1) | (a > fmt.max)
    bad = finite & (a != 0) & off_grid
    if bool(bad.any()):
        i = int(bad.nonzero()[0, 0])
        raise ValueError(f"value {float(x[i])!r} is not on the grid of {fmt.name}")
    code = (efield << man) | torch.where(finite, m, torch.zeros_like(m)).to(torch.int64)
    code = torch.where(a == 0, torch.zeros_like(code), code)
    code = code | (neg.to(torch.int64) << (bits - 1))
    if not bool(finite.all()):
        ones_e = (2**fmt.exp - 1) << man
        if fmt.special == "ieee":
            inf, nan = ones_e, ones_e | (1 << (man - 1) if man > 0 else 1)
        elif fmt.special == "fn":
            inf, nan = None, ones_e | (2**man - 1)
        elif fmt.special == "fnuz":
            inf, nan = None, 1 << (bits - 1)
        else:
            inf, nan = None, None
        isnan, isinf = torch.isnan(x), torch.isinf(x)
        if (nan is None and bool(isnan.any())) or (inf is None and bool(isinf.any())):
            raise ValueError(f"{fmt.name} has no encoding for {'NaN' if bool(isnan.any()) else 'Inf'}")
        if nan is not None:
            code = torch.where(isnan, torch.full_like(code, nan), code)
        if inf is not None:
            code = torch.where(isinf, torch.full_like(code, inf) | (neg.to(torch.int64) << (bits - 1)), code)
    return code.to(torch.int32).reshape(v.shape)


def float_values(codes: torch.Tensor, fmt: FloatFormat) -> torch.Tensor:
    """float32 values of ``fmt`` codes (the inverse of :func:`float_codes`)."""
    fmt = _check(fmt)
    man, bias, bits = fmt.man, fmt.bias, fmt.total_bits
    c = codes.reshape(-1).to(torch.int64)
    if bool(((c < 0) | (c >= 2**bits)).any()):
        raise ValueError(f"codes of {fmt.name} lie in 0..{2**bits - 1}")
    neg = (c >> (bits - 1)) & 1
    efield = (c >> man) & (2**fmt.exp - 1)
    m = c & (2**man - 1)
    sub = efield == 0
    sig = torch.where(sub, m, m + 2**man).double()
    exp = torch.where(sub, torch.full_like(efield, fmt.emin), efield - bias) - man
    val = torch.ldexp(sig, exp.double())  # exact: sig < 2^24 and the exponent lies inside float32's range
    val = torch.where(neg == 1, -val, val)
    top = efield == 2**fmt.exp - 1
    if fmt.special == "ieee":
        val = torch.where(top & (m == 0), torch.where(neg == 1, -torch.inf, torch.inf), val)
        val = torch.where(top & (m != 0), torch.nan, val)
    elif fmt.special == "fn":
        val = torch.where(top & (m == 2**man - 1), torch.nan, val)
    elif fmt.special == "fnuz":
        val = torch.where(c == 1 << (bits - 1), torch.nan, val)
    return val.to(torch.float32).reshape(codes.shape)


def packed_nbytes(count: int, width: int) -> int:
    """Bytes of ``count`` packed ``width``-bit words."""
    return -(-count * width // 8)


def pack_bits(codes: torch.Tensor, width: int) -> torch.Tensor:
    """Pack non-negative integers below 2^width, LSB first, into ceil(n·width/8) uint8 bytes."""
    if isinstance(width, bool) or not isinstance(width, int) or not 1 <= width <= 32:
        raise ValueError(f"bit width must be an int in 1..32, got {width!r}")
    c = codes.reshape(-1).to(torch.int64)
    if c.numel() and bool(((c < 0) | (c >= 2**width)).any()):
        raise ValueError(f"pack_bits: values must lie in 0..{2**width - 1}")
    if width == 8:
        return c.to(torch.uint8)
    if width == 16:
        return torch.stack([c & 255, c >> 8], 1).reshape(-1).to(torch.uint8)
    if width in (1, 2, 4):  # whole words per byte
        per = 8 // width
        pad = (-c.numel()) % per
        if pad:
            c = torch.cat([c, c.new_zeros(pad)])
        return (c.view(-1, per) << (torch.arange(per) * width)).sum(1).to(torch.uint8)
    bits = ((c.unsqueeze(1) >> torch.arange(width)) & 1).reshape(-1)
    pad = (-bits.numel()) % 8
    if pad:
        bits = torch.cat([bits, bits.new_zeros(pad)])
    return (bits.view(-1, 8) << torch.arange(8)).sum(1).to(torch.uint8)


def unpack_bits(buf: torch.Tensor, width: int, count: int) -> torch.Tensor:
    """The ``count`` ``width``-bit integers (int64) stored in the uint8 tensor ``buf`` by :func:`pack_bits`."""
    if buf.dtype != torch.uint8:
        raise ValueError(f"unpack_bits takes a uint8 buffer, got {buf.dtype}")
    need = packed_nbytes(count, width)
    if buf.numel() < need:
        raise ValueError(f"{count} words of {width} bits need {need} bytes, buffer has {buf.numel()}")
    b = buf.reshape(-1)[:need].to(torch.int64)
    if width == 8:
        return b
    if width == 16:
        b = b.view(-1, 2)
        return b[:, 0] | (b[:, 1] << 8)
    if width in (1, 2, 4):
        per = 8 // width
        return ((b.unsqueeze(1) >> (torch.arange(per) * width)) & (2**width - 1)).reshape(-1)[:count]
    bits = ((b.unsqueeze(1) >> torch.arange(8)) & 1).reshape(-1)[: count * width]
    return (bits.view(count, width) << torch.arange(width)).sum(1)


def torch_dtype_of(fmt: FloatFormat) -> torch.dtype | None:
    """The torch dtype with exactly ``fmt``'s value set and bit layout, if there is one."""
    if not isinstance(fmt, FloatFormat) or not fmt.subnormals:
        return None
    key = (fmt.exp, fmt.man, fmt.bias, fmt.special)
    table = {(4, 3, 7, "fn"): "float8_e4m3fn", (5, 2, 15, "ieee"): "float8_e5m2", (4, 3, 8, "fnuz"): "float8_e4m3fnuz",
             (5, 2, 16, "fnuz"): "float8_e5m2fnuz", (8, 7, 127, "ieee"): "bfloat16", (5, 10, 15, "ieee"): "float16"}
    name = table.get(key)
    return getattr(torch, name, None) if name else None


@functools.cache
def _small_tables(fmt: FloatFormat) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For formats of <= 8 bits: (finite non-negative values ascending, their codes, the decode table of all codes)."""
    half = torch.arange(2 ** (fmt.total_bits - 1))
    vals = float_values(half, fmt)  # ascending in the code for the sign-0 half
    fin = torch.isfinite(vals)
    return vals[fin].contiguous(), half[fin].contiguous(), float_values(torch.arange(2**fmt.total_bits), fmt)


def _small_codes(v: torch.Tensor, fmt: FloatFormat) -> torch.Tensor:
    """float_codes for a <= 8-bit format by table search (finite values), the general path otherwise."""
    vals, codes, _ = _small_tables(fmt)
    a = v.abs()
    idx = torch.searchsorted(vals, a).clamp_(max=vals.numel() - 1)
    if not bool((vals[idx] == a).all()):  # off the grid or non-finite: the general path names the problem
        return float_codes(v, fmt)
    neg = torch.signbit(v)
    if fmt.special == "fnuz":
        neg = neg & (a != 0)
    return codes[idx] | (neg.to(torch.int64) << (fmt.total_bits - 1))


def encode(v: torch.Tensor, fmt: FloatFormat) -> torch.Tensor:
    """Packed bytes (uint8, ceil(n · bits / 8)) of the float32 values ``v`` on ``fmt``'s grid."""
    fmt = _check(fmt)
    dt = torch_dtype_of(fmt)
    flat = v.reshape(-1)
    if dt is not None and v.dtype == torch.float32:
        if not bool(torch.isfinite(flat).all()):
            return pack_bits(float_codes(flat, fmt), fmt.total_bits)
        return flat.to(dt).view(torch.uint8)
    if fmt.total_bits <= 8 and v.dtype == torch.float32:
        return pack_bits(_small_codes(flat, fmt), fmt.total_bits)
    return pack_bits(float_codes(flat, fmt), fmt.total_bits)


def decode(buf: torch.Tensor, fmt: FloatFormat, count: int) -> torch.Tensor:
    """The ``count`` float32 values packed in ``buf`` by :func:`encode`."""
    fmt = _check(fmt)
    dt = torch_dtype_of(fmt)
    if dt is not None and buf.dtype == torch.uint8:
        nb = packed_nbytes(count, fmt.total_bits)
        if buf.numel() < nb:
            raise ValueError(f"{count} values of {fmt.name} need {nb} bytes, buffer has {buf.numel()}")
        b = buf.reshape(-1)[:nb]
        if b.storage_offset() % b.new_empty(0, dtype=dt).element_size():
            b = b.clone()  # a 2-byte view needs an aligned start
        return b.contiguous().view(dt).float()
    if fmt.total_bits <= 8:
        return _small_tables(fmt)[2][unpack_bits(buf, fmt.total_bits, count)]
    return float_values(unpack_bits(buf, fmt.total_bits, count), fmt)
