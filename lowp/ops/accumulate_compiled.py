"""Compiled float32 fast path of ``lowp.matmul(a, b, accumulate=fmt, chunk=c)`` (see ``accumulate.py``).

When it applies (``plan`` decides; otherwise the float64 reference path of ``accumulate.py`` runs):

* ``fmt`` is a FloatFormat with p = man + 1 <= 11 (so 24 >= 2p + 2) and fmt.max·(2^(24-p)+1) < 2^127;
* every operand element is finite; sig(a) + sig(b) <= p (max significant bits, from the bit patterns: ``_analyse``,
  compiled), so every product has q <= p bits and is exact in float32;
* every nonzero product is a multiple of 2^G with G >= emin - man (>= emin for a flush-to-zero format) and
  G >= -100, G = (min 2-adic valuation of a's nonzero elements) + (same of b): all partial sums are then
  multiples of 2^G, so anything below the format's normal range is exactly representable (no subnormal rounding,
  nothing flushed) and nothing underflows in float32;
* no partial sum can overflow: K·max|a|·max|b|·(1+2^-p)^(c+nch+2) <= fmt.max (else the exact |a|·|b| GEMM bound
  is tried); a product goes through at most c roundings in its chunk and nch in the total.

Then every add r <- RN_p(r + p_k) is done as fl32(r + p_k) followed by rounding to p bits with Veltkamp splitting
(t = x·C, y = t - (t - x), C = 2^(24-p) + 1), which is round-to-nearest-even to p bits of a float32 (checked
bit for bit against ``Format.quantize`` in the tests, and on a probe when the kernel is first compiled). The two
roundings are one correct rounding: r and p_k both have at most p significant bits and 24 >= 2p + 2, so by
Figueroa (1995) RN_p(RN_24(r + p_k)) = RN_p(r + p_k) (innocuous double rounding for addition needs 24 >= 2p + 1);
the chunk totals (p-bit values) are added the same way. A chunk register starts at -0: RN(-0 + p_1) = p_1 because
p_1 is an in-range p-bit value, and -0 is the identity of IEEE addition (x + -0 = x, also for x = ±0), so chunks
are padded with -0 products (a = -0, b = +0) to a multiple of ``UNROLL`` and the chunk count to a multiple of
``SUM_UNROLL`` with -0 chunk results, without changing any bit.

Layout: all chunks at once. The register tile is (nch·B, rows, N) float32; ``_steps`` (compiled, one fused loop
over the tile) performs ``UNROLL`` consecutive adds per call with the products a[:, k]·b[k, :] formed on the fly
(outer-product broadcast, nothing K×M×N is materialised); ``_sums`` adds ``SUM_UNROLL`` chunk results per call.
Rows are processed in blocks (``TILE_BYTES``) so the tile stays in cache. The kernels come from the package's one
compile cache (``formats/compiling.py``: compiled lazily on first use, never at import; dynamic shapes, fixed ranks:
one graph per kernel, plus one when the tile's leading size is 1) and are checked on a probe when first made; the
package's one switch decides (``LOWP_COMPILE=0`` disables this path; ``compiled_at_any_size`` lets GEMMs below
``MIN_WORK`` take it). ``fast_calls`` counts matmuls that really took it (tests check it).
"""
from __future__ import annotations

import math

import torch

from ..formats import FloatFormat
from ..formats.compiling import cached, compiled

UNROLL = 16  # adds per compiled call (graph size vs call overhead)
SUM_UNROLL = 8  # chunk results added per compiled call
TILE_BYTES = 1 << 21  # register tile per row block (all chunks), bytes
MIN_WORK = 1 << 18  # M·N·K below which the eager reference path is used (compiling is not worth it)

fast_calls = 0


def _rnd(x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Round-to-nearest-even of float32 ``x`` to p bits (Veltkamp splitting, c = 2^(24-p) + 1)."""
    t = x * c
    return t - (t - x)


def _steps(r: torch.Tensor, a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> None:
    """UNROLL sequential adds x <- RN_p(x + a[u]·b[u]) on x = the first B tiles of r (J, Bt, M, N) (the rest stays);
    a (UNROLL, B, M), b (UNROLL, B, N). Every argument is a standalone contiguous tensor (no views: no guards on
    bases or offsets, so no recompiles)."""
    nb = a.shape[1]
    rf = r.view(-1, r.shape[2], r.shape[3])
    x = rf[:nb]
    for u in range(UNROLL):
        x = _rnd(x + a[u].unsqueeze(-1) * b[u].unsqueeze(-2), c)
    rf[:nb].copy_(x)


def _sums(t: torch.Tensor, x: torch.Tensor, c: torch.Tensor) -> None:
    """t (Bt, M, N) <- SUM_UNROLL sequential adds t <- RN_p(t + x[j]); x (SUM_UNROLL, Bt, M, N)."""
    y = t
    for j in range(SUM_UNROLL):
        y = _rnd(y + x[j], c)
    t.copy_(y)


def _probe_vals(g: torch.Generator, *shape, mant: int, lo: int, hi: int) -> torch.Tensor:
    m = torch.randint(-(2 ** mant), 2 ** mant, shape, generator=g).float()
    return m * 2.0 ** torch.randint(lo, hi, shape, generator=g).float()


_PROBE_C = torch.tensor(float(2 ** (24 - 10) + 1))  # p = 10
_PROBE_ROWS, _PROBE_N = 32, 256


def _probe_steps(steps) -> bool:
    """The compiled ``_steps`` against ``_steps`` run eagerly, on values built to hit midpoints and neighbours.
    The shapes are those of a real tile: the first call's sizes are the hints inductor's heuristics (threads,
    vector tiling) see, as the graphs are compiled with dynamic shapes."""
    g = torch.Generator().manual_seed(1)
    ok = True
    for nb in (SUM_UNROLL - 3, 1):  # the second graph: one chunk of Bt = 1 (0/1 size specialisation)
        a = _probe_vals(g, UNROLL, nb, _PROBE_ROWS, mant=3, lo=-6, hi=6)
        b = _probe_vals(g, UNROLL, nb, _PROBE_N, mant=3, lo=-6, hi=6)
        r1 = _probe_vals(g, SUM_UNROLL, 1, _PROBE_ROWS, _PROBE_N, mant=10, lo=-2, hi=6)
        r2 = r1.clone()
        steps(r1, a, b, _PROBE_C)
        _steps(r2, a, b, _PROBE_C)
        ok = ok and torch.equal(r1.view(torch.int32), r2.view(torch.int32))
    return ok


def _probe_sums(sums) -> bool:
    """The compiled ``_sums`` against ``_sums`` run eagerly (as ``_probe_steps``)."""
    g = torch.Generator().manual_seed(2)
    r = _probe_vals(g, SUM_UNROLL, 1, _PROBE_ROWS, _PROBE_N, mant=10, lo=-2, hi=6)
    t1 = r[0].clone()
    t2 = t1.clone()
    sums(t1, r, _PROBE_C)
    _sums(t2, r, _PROBE_C)
    return torch.equal(t1.view(torch.int32), t2.view(torch.int32))


def _get_kernels():
    """(steps, sums) compiled, or None where compiling failed or a probe found a difference (then the float64
    reference path runs: the float32 kernels are only worth it compiled)."""
    steps = cached("accumulate steps") or compiled(_steps, "accumulate steps", probe=_probe_steps,
                                                   what="lowp.matmul accumulation kernel", direct=False)
    sums = cached("accumulate sums") or compiled(_sums, "accumulate sums", probe=_probe_sums,
                                                 what="lowp.matmul accumulation kernel (chunk sums)", direct=False)
    return (steps, sums) if steps.ok and sums.ok else None


def _analyse(x: torch.Tensor) -> torch.Tensor:
    """x flat float32 → int32 [max of |x|'s bits, min 2-adic valuation over nonzero elements (-1000 for a float32
    subnormal, 1000 if none), max significant bits over nonzero elements (0 if none)]."""
    bits = x.view(torch.int32) & 0x7FFFFFFF
    expf = bits >> 23
    low = bits & -bits  # lowest set bit of the stored mantissa (with the hidden bit, 1 << 23, as a backstop)
    low = torch.where((bits & 0x7FFFFF) == 0, 1 << 23, low & 0x7FFFFF)
    tz = (low.float().view(torch.int32) >> 23) - 127
    nz = bits != 0
    val = torch.where(nz, torch.where(expf == 0, -1000, expf - 150 + tz), 1000)
    sig = torch.where(nz, 24 - tz, 0)
    return torch.stack([bits.max(), val.min(), sig.max()])


def _stats(x: torch.Tensor) -> tuple[float, int, int]:
    """(max |x| (nan/inf propagate), min valuation over nonzero, max significant bits over nonzero) of float x."""
    flat = _own(x.reshape(-1).float())
    if flat.numel() == 0:
        return 0.0, 1000, 0
    mb, val, sig = (int(v) for v in (compiled(_analyse) if flat.numel() >= 4096 else _analyse)(flat))
    return float(torch.tensor(mb, dtype=torch.int32).view(torch.float32)), val, sig


def plan(a: torch.Tensor, b: torch.Tensor, fmt, chunk: int | None = None) -> bool:
    """Whether the float32 path is exact for ``a`` (…, M, K) @ ``b`` (…, K, N) accumulated in ``fmt``."""
    if not isinstance(fmt, FloatFormat):
        return False
    p = fmt.man + 1
    if 2 * p + 2 > 24:
        return False
    limit = min(fmt.max, 2.0 ** 126 / (2.0 ** (24 - p) + 1))  # no partial sum overflows fmt, nor x·C float32
    if a.dtype not in (torch.float32, torch.float16, torch.bfloat16) or b.dtype not in (
            torch.float32, torch.float16, torch.bfloat16):
        return False  # float64 operands: the reference path (their values may not fit float32)
    amax, aval, asig = _stats(a)
    if not math.isfinite(amax) or amax >= 2.0 ** 100:
        return False
    bmax, bval, bsig = _stats(b)
    if not math.isfinite(bmax) or bmax >= 2.0 ** 100:
        return False
    if amax == 0 or bmax == 0:
        return True  # all products are ±0
    if asig + bsig > p:
        return False
    g = aval + bval
    if g < -100 or g < (fmt.emin - fmt.man if fmt.subnormals else fmt.emin):
        return False
    k = a.shape[-1]
    c = k if chunk is None or chunk <= 1 or chunk >= k else chunk
    # every product passes through at most c roundings in its chunk and nch in the total: every partial sum is at
    # most (1 + 2^-p)^(c + nch) times the sum of the |products| (the reference path's bound uses K + 2)
    factor = math.exp((c + -(-k // c) + 2) * (math.log1p(2.0 ** -p) + 2.0 ** -52)) * (1 + 1e-9)
    if k * amax * bmax * factor <= limit:
        return True
    bound = torch.matmul(a.double().abs(), b.double().abs()).max()
    return bool(torch.isfinite(bound)) and float(bound) * factor <= limit


def _own(x: torch.Tensor) -> torch.Tensor:
    """x as a standalone contiguous tensor (a compiled call on views guards on their base: recompiles)."""
    return x if x._base is None and x.is_contiguous() else x.clone(memory_format=torch.contiguous_format)


def matmul3(a: torch.Tensor, b: torch.Tensor, fmt: FloatFormat, chunk: int | None) -> torch.Tensor | None:
    """a (Bt, M, K) @ b (Bt, K, N) (float32 values, ``plan`` true) accumulated in ``fmt`` → (Bt, M, N) float32, or
    None when the compiled kernels are unavailable."""
    global fast_calls
    kernels = _get_kernels()
    if kernels is None:
        return None
    steps, sums = kernels
    a, b = a.float(), b.float()
    bt, m, k = a.shape
    n = b.shape[-1]
    if n < 16 and m > n:  # vectorise over the longer side: C^T = B^T A^T has the same products in the same order
        return matmul3(b.transpose(1, 2), a.transpose(1, 2), fmt, chunk).transpose(1, 2)
    c = k if chunk is None or chunk <= 1 or chunk >= k else chunk
    nch = -(-k // c)
    cp = -(-c // UNROLL) * UNROLL  # steps per chunk, padded with -0 products
    ngr = -(-nch // SUM_UNROLL)  # groups of SUM_UNROLL chunks: one register tile (SUM_UNROLL, Bt, rows, N) each
    cst = torch.tensor(float(2 ** (24 - fmt.man - 1) + 1))
    rows = max(2, min(m, TILE_BYTES // (4 * SUM_UNROLL * bt * n)))
    nblk = -(-m // rows)
    mp = nblk * rows
    # a -> [blk][g][s] (UNROLL, nb, rows): [u, j·Bt + i, r] = a[i, blk·rows + r, (g·SUM_UNROLL + j)·c + s + u]
    ap = torch.full((bt, mp, nch * c), -0.0)
    ap[:, :m, :k] = a
    ap = ap.view(bt, mp, nch, c)
    if cp > c:
        ap = torch.cat([ap, torch.full((bt, mp, nch, cp - c), -0.0)], 3)
    a_s = ap.view(bt, nblk, rows, nch, cp).permute(1, 4, 3, 0, 2)  # (nblk, cp, nch, Bt, rows)
    bp = torch.zeros(bt, nch * c, n)
    bp[:, :k] = b
    bp = bp.view(bt, nch, c, n)
    if cp > c:
        bp = torch.cat([bp, torch.zeros(bt, nch, cp - c, n)], 2)
    b_s = bp.permute(2, 1, 0, 3)  # (cp, nch, Bt, N)
    groups = [(g * SUM_UNROLL, min(nch, (g + 1) * SUM_UNROLL)) for g in range(ngr)]
    b_l = [[_own(b_s[s:s + UNROLL, j0:j1].reshape(UNROLL, (j1 - j0) * bt, n)) for s in range(0, cp, UNROLL)]
           for j0, j1 in groups]
    out = torch.empty(nblk, bt, rows, n)
    r = torch.empty(SUM_UNROLL, bt, rows, n)
    t = torch.empty(bt, rows, n)
    for blk in range(nblk):
        if nch > 1:
            t.fill_(-0.0)
        for (j0, j1), bg in zip(groups, b_l):
            r.fill_(-0.0)
            for i, s in enumerate(range(0, cp, UNROLL)):
                steps(r, _own(a_s[blk, s:s + UNROLL, j0:j1].reshape(UNROLL, (j1 - j0) * bt, rows)), bg[i], cst)
            if nch == 1:
                t.copy_(r[0])
            else:
                sums(t, r, cst)
        out[blk] = t
    res = out.permute(1, 0, 2, 3).reshape(bt, mp, n)[:, :m]
    if fmt.special == "fnuz":
        res = res + 0.0  # fnuz has no -0
    fast_calls += 1
    return res
