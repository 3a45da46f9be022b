"""GEMM with accumulation in a number format (Wang et al. 2018 chunk-based accumulation, Sakr et al. 2019).

``matmul(a, b, accumulate=fmt, chunk=c)`` computes C[m, n] = Σ_k a[m, k]·b[k, n] as a hardware accumulator of
format ``fmt`` would:

    products   p_k = a[m, k]·b[k, n], exact (computed in float64: a product of two float32 values has at most
               48 significant bits; float64 operands whose products need more than 53 bits are rounded to float64)
    chunks     K is split into chunks of ``c`` consecutive indices; inside a chunk the register starts with the
               chunk's first product and every further product is added with one rounding to fmt (nearest-even)
               after the add:  r ← RN(r + p_k)
    total      the chunk results are added the same way: T starts with the first chunk result, T ← RN(T + r_j);
               the output is RN(T) (a no-op unless nothing was rounded yet, e.g. K = 1).

So chunk=None, chunk=1 and any chunk ≥ K all mean the same plain sequential accumulation
s ← RN(s + p_k) starting from s = p_1. Sign of zero follows IEEE addition; NaN/Inf propagate as in the format.

Guarantee: every RN is the correctly rounded (one rounding, ties to even) value of the exact sum r + p_k, with the
format's range rules (overflow, subnormals, fnuz zero) — bit-identical to ``lowp.quantize`` of the exact sum.
How: s = fl64(r + p) is formed in float64. When RN_53 may differ from the exact sum in a way that matters we
replace it by the round-to-odd value (TwoSum gives the exact error; Boldo & Melquiond 2008: RN_p(RO_53(x)) =
RN_p(x) for p ≤ 51). That correction is skipped when it provably cannot matter: an operand-significand analysis
gives the product precision q (≤ bits(a) + bits(b)); with q ≤ p and p + q ≤ 52 (p = man + 1 of the accumulator)
fl64(r + p) is never a spurious midpoint of the p-bit grid (e.g. fp8 operands into an fp16-169 accumulator).
Rounding to p bits uses the magic-number trick (x + c) − c with c = 1.5·2^52·quantum(x) (exact ties to even) when
a bound (|a|·|b| GEMM times (1+2^-p)^(K+2)) proves that no partial sum can overflow, all inputs are finite and the
format keeps subnormals; otherwise every add is rounded by the general kernel ``Format.quantize`` in float64.

Fast path: when it is provably bit-identical (operand bits, exponent range, overflow bound; see
``accumulate_compiled.py``) and M·N·K is large, the same computation runs in float32 in torch.compile'd kernels
(the package's one compile switch, ``formats/compiling.py``: ``LOWP_COMPILE=0`` disables it,
``compiled_at_any_size()`` takes it at every size). What follows describes the float64 reference path.

Vectorised over the output tile: the Python loop runs over the ``c`` positions inside a chunk (all chunks and all
M×N outputs at once), then over the chunk results — never per element. The result is float32 (float64 if an
operand is float64): every value of a FloatFormat fits float32 exactly.
"""
from __future__ import annotations

import math

import torch

from ..formats import FloatFormat, Format, get_format
from ..formats.compiling import worth_it
from ..formats.integer import FixedFormat

_EXP_MASK = 0x7FF0000000000000
_MAX_TILE = 1 << 19  # elements per working tile (rows of the output are processed in blocks; ~4 MB float64 fits cache)


def _check_chunk(chunk: int | None) -> int | None:
    if chunk is None:
        return None
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"chunk must be a positive int or None, got {chunk!r}")
    return chunk


def _acc_format(accumulate: str | Format) -> Format:
    fmt = get_format(accumulate)
    if not isinstance(fmt, (FloatFormat, FixedFormat)):
        raise ValueError(f"accumulate must be a float or fixed-point format (an element-wise grid), got "
                         f"{getattr(fmt, 'name', fmt)!r} ({type(fmt).__name__}: its scale depends on the tensor)")
    return fmt


def significand_bits(x: torch.Tensor) -> int:
    """An upper bound on the significant bits of every element of float tensor ``x`` (1 for all-zero mantissas):
    mantissa width + 1 minus the fewest trailing zero bits of any element's stored mantissa."""
    if x.dtype in (torch.float16, torch.bfloat16):
        x = x.float()
    if x.dtype == torch.float32:
        mant, mb = x.view(torch.int32).to(torch.int64) & 0x7FFFFF, 23
    elif x.dtype == torch.float64:
        mant, mb = x.view(torch.int64) & 0xFFFFFFFFFFFFF, 52
    else:
        raise TypeError(f"lowp.matmul expects floating-point operands, got dtype {x.dtype}")
    if mant.numel() == 0:
        return 1
    low = mant & -mant  # lowest set bit (0 where the mantissa is 0)
    low = torch.where(low == 0, torch.ones_like(low) << mb, low)
    tz = int(low.min()).bit_length() - 1
    return mb + 1 - tz


class _Rounder:
    """In-place rounding of float64 tiles to the accumulator grid, fast (magic number) or general (kernel)."""

    def __init__(self, fmt: Format, fast: bool, odd: bool) -> None:
        self.fmt, self.fast, self.odd = fmt, fast, odd
        if fast:
            assert isinstance(fmt, FloatFormat)
            self.k1 = 1.5 * 2.0 ** (52 - fmt.man)
            self.cmin = math.ldexp(1.0, fmt.emin) * self.k1
            self.fnuz = fmt.special == "fnuz"

    def round_(self, x: torch.Tensor, out: torch.Tensor, ibuf: torch.Tensor) -> None:
        """out ← RN_fmt(x); x is not modified (it may alias nothing of out)."""
        if self.fast:
            torch.bitwise_and(x.view(torch.int64), _EXP_MASK, out=ibuf)
            c = ibuf.view(torch.float64)
            c.mul_(self.k1).clamp_(min=self.cmin)  # 1.5·2^52·quantum, quantum = 2^(max(e, emin) - man)
            torch.add(x, c, out=out)
            out.sub_(c)
            torch.copysign(out, x, out=out)
        else:
            out.copy_(self.fmt.quantize(x))

    def add_(self, r: torch.Tensor, p: torch.Tensor, ibuf: torch.Tensor) -> None:
        """r ← RN(r + p) with the exact sum (p is clobbered)."""
        if not self.odd:
            p.add_(r)
            self.round_(p, r, ibuf)
            return
        x = r + p
        bb = x - r
        err = (r - (x - bb)) + (p - bb)  # TwoSum: x + err == r + p exactly (for finite x)
        bits = x.view(torch.int64)
        fix = (err != 0) & ((bits & 1) == 0) & torch.isfinite(err)
        away = torch.signbit(err) == torch.signbit(x)
        bits.add_(torch.where(away, 1, -1) * fix)  # round to odd: the odd neighbour on err's side
        self.round_(x, r, ibuf)

    def finish(self, r: torch.Tensor, ibuf: torch.Tensor) -> torch.Tensor:
        out = torch.empty_like(r)
        self.round_(r, out, ibuf)
        if self.fast and self.fnuz:
            out.add_(0.0)  # fnuz has no -0
        return out


def _plan(a64: torch.Tensor, b64: torch.Tensor, a: torch.Tensor, b: torch.Tensor, fmt: Format) -> _Rounder:
    if not isinstance(fmt, FloatFormat):
        return _Rounder(fmt, fast=False, odd=True)
    p = fmt.man + 1
    q = significand_bits(a) + significand_bits(b)
    odd = not (q <= p and p + q <= 52)
    fast = fmt.subnormals
    if fast:
        k = a64.shape[-1]
        bound = torch.matmul(a64.abs(), b64.abs()).max() if a64.numel() and b64.numel() else torch.tensor(0.0)
        factor = math.exp((k + 2) * (math.log1p(2.0**-p) + 2.0**-52)) * (1 + 1e-9)
        fast = bool(torch.isfinite(bound)) and float(bound) * factor <= fmt.max
    return _Rounder(fmt, fast=fast, odd=odd)


def _accumulate(at: torch.Tensor, b: torch.Tensor, rounder: _Rounder, chunk: int) -> torch.Tensor:
    """at: (B, K, M) and b: (B, K, N) float64 → (B, M, N) float64 accumulated per the module docstring."""
    nb, k, m = at.shape
    n = b.shape[-1]
    c = k if chunk <= 1 or chunk >= k else chunk
    nch = -(-k // c)
    last = k - (nch - 1) * c  # size of the last chunk
    pad = nch * c - k
    if pad:
        at = torch.cat([at, at.new_zeros(nb, pad, m)], 1)
        b = torch.cat([b, b.new_zeros(nb, pad, n)], 1)
    # step-major layout: (c, B, nch, M) and (c, B, nch, N)
    a_s = at.view(nb, nch, c, m).permute(2, 0, 1, 3).contiguous().unsqueeze(-1)
    b_s = b.view(nb, nch, c, n).permute(2, 0, 1, 3).contiguous().unsqueeze(-2)
    r = torch.mul(a_s[0], b_s[0])  # (B, nch, M, N): the first product of every chunk, exact
    p = torch.empty_like(r)
    ibuf = torch.empty(r.shape, dtype=torch.int64, device=r.device)
    for i in range(1, c):
        sl = slice(None) if i < last else slice(0, nch - 1)
        rr, pp, ii = r[:, sl], p[:, sl], ibuf[:, sl]
        torch.mul(a_s[i][:, sl], b_s[i][:, sl], out=pp)
        rounder.add_(rr, pp, ii)
    t = r[:, 0].clone()
    if nch > 1:
        p1, i1 = p[:, 0], ibuf[:, 0]
        for j in range(1, nch):
            p1.copy_(r[:, j])
            rounder.add_(t, p1, i1)
    return rounder.finish(t, ibuf[:, 0])


def _fast(a2, b2, batch, m, k, n, fmt, chunk) -> torch.Tensor | None:
    """The compiled float32 path of ``accumulate_compiled`` when allowed (``compiling.worth_it`` of M·N·K against
    ``MIN_WORK``), applicable and exact; else None."""
    from . import accumulate_compiled as af

    # CPU only: its cache tiling is tuned for a CPU, and its Veltkamp splitting needs fl(x·c) then fl(t - x) with no
    # FMA contraction, which Triton does not promise; other devices run the float64 reference (same bits)
    if k == 0 or a2.device.type != "cpu" or not isinstance(fmt, FloatFormat):
        return None
    if not worth_it(math.prod(batch) * m * n * k, af.MIN_WORK):
        return None
    if not af.plan(a2, b2, fmt, chunk):
        return None
    a3 = a2.expand(*batch, m, k).reshape(-1, m, k)
    b3 = b2.expand(*batch, k, n).reshape(-1, k, n)
    return af.matmul3(a3, b3, fmt, chunk)


def matmul(a: torch.Tensor, b: torch.Tensor, *, accumulate=None, chunk: int | None = None) -> torch.Tensor:
    """a @ b (shapes as torch.matmul, batch dims broadcast; 1-D operands as in torch.matmul) with the sum over K
    accumulated in format ``accumulate`` with chunk size ``chunk`` (see the module docstring).
    ``accumulate`` may also be a tensor-core accumulator model (``TensorCoreAccumulator`` or a name such as
    ``"tc14-p128"``; ``tensor_core.py``): limited alignment bits, promotion to FP32 (then ``chunk`` must be None).
    ``accumulate=None`` is plain FP32 ``torch.matmul`` (differentiable); otherwise the result carries no
    gradient (training uses ``lowp.ops`` emulated ops, whose backward GEMMs call this function)."""
    from .tensor_core import TensorCoreAccumulator, get_accumulator

    chunk = _check_chunk(chunk)
    if not isinstance(a, torch.Tensor) or not isinstance(b, torch.Tensor):
        raise TypeError(f"lowp.matmul expects tensors, got {type(a).__name__} and {type(b).__name__}")
    if accumulate is None:
        return torch.matmul(a, b)
    if isinstance(accumulate, str) and accumulate.strip().lower().startswith("tc"):
        accumulate = get_accumulator(accumulate)
    if isinstance(accumulate, TensorCoreAccumulator):
        if chunk is not None:
            raise ValueError(f"lowp.matmul: chunk={chunk} does not apply to a tensor-core accumulator (its "
                             f"promotion interval is promote={accumulate.promote})")
        fmt = accumulate
    else:
        fmt = _acc_format(accumulate)
    for name, t in (("a", a), ("b", b)):
        if not t.is_floating_point():
            raise TypeError(f"lowp.matmul: operand {name} must be floating point, got dtype {t.dtype}")
        if t.dim() == 0:
            raise ValueError(f"lowp.matmul: operand {name} must have at least 1 dimension, got a 0-d tensor")
    out_dtype = torch.float64 if torch.float64 in (a.dtype, b.dtype) else torch.float32
    a_vec, b_vec = a.dim() == 1, b.dim() == 1
    a2 = a.unsqueeze(0) if a_vec else a
    b2 = b.unsqueeze(-1) if b_vec else b
    if a2.shape[-1] != b2.shape[-2]:
        raise ValueError(f"lowp.matmul: shapes {tuple(a.shape)} and {tuple(b.shape)} cannot be multiplied "
                         f"(K = {a2.shape[-1]} vs {b2.shape[-2]})")
    batch = torch.broadcast_shapes(a2.shape[:-2], b2.shape[:-2])
    m, k, n = a2.shape[-2], a2.shape[-1], b2.shape[-1]
    with torch.no_grad():
        if isinstance(fmt, TensorCoreAccumulator):
            from .tensor_core import tensor_core_matmul3

            nb = math.prod(batch)
            out = tensor_core_matmul3(a2.detach().expand(*batch, m, k).reshape(nb, m, k),
                                      b2.detach().expand(*batch, k, n).reshape(nb, k, n), fmt)
        else:
            out = _fast(a2.detach(), b2.detach(), batch, m, k, n, fmt, chunk)
        if out is None:
            out = _reference(a2, b2, batch, m, k, n, fmt, chunk)
        out = out.reshape(*batch, m, n).to(out_dtype)
    if a_vec:
        out = out.squeeze(-2)
    if b_vec:
        out = out.squeeze(-1)
    return out


def _reference(a2, b2, batch, m, k, n, fmt, chunk) -> torch.Tensor:
    """The float64 tiled reference accumulation (any format and chunk), shape (batch·, m, n)."""
    a64 = a2.detach().to(torch.float64).expand(*batch, m, k).reshape(-1, m, k)
    b64 = b2.detach().to(torch.float64).expand(*batch, k, n).reshape(-1, k, n)
    if k == 0:
        return torch.zeros(a64.shape[0], m, n, dtype=torch.float64, device=a64.device)
    rounder = _plan(a64, b64, a2, b2, fmt)
    at = a64.transpose(1, 2)
    rows = max(1, _MAX_TILE // max(1, a64.shape[0] * n * -(-k // (chunk or k))))
    parts = [_accumulate(at[:, :, i:i + rows].contiguous(), b64, rounder, chunk or 1) for i in range(0, m, rows)]
    return parts[0] if len(parts) == 1 else torch.cat(parts, 1)
