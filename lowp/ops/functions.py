"""Emulated GEMM-like ops : linear, conv1d, conv2d, matmul/bmm and embedding with a format per tensor role.

Each op is composed from two custom autograd Functions around torch's own kernels:

    x_q = RoleQ(x)   forward: Q_input(x)        backward: Q_grad_input(dx)
    w_q = RoleQ(w)   forward: Q_weight(w)       backward: Q_grad_weight(dw)
    y   = GEMM(x_q, w_q) + b                    (torch kernel, or AccGEMM when the recipe accumulates in a format)
    y_q = RoleQ(y)   forward: Q_output(y)       backward: Q_grad_output(dy)

so in backward the error dy is rounded once (grad_output), the two backward GEMMs (dx = dy·W, dw = dyᵀ·x) run on
the rounded operands, and their results are rounded once each (grad_input, grad_weight). Where both operand roles
are set, x and w are rounded by one node (``_PairQ``: the two forward roundings in one compiled call where both
take a short path, likewise the two gradient roundings; the bits of two RoleQ, per-call overhead halved). Roles a
recipe leaves unset cost nothing, so the ``fp32`` recipe runs exactly torch's kernels (bit-identical to plain PyTorch). The bias
is added in FP32 before the output rounding; its gradient is the FP32 sum of the rounded dy.

Accumulation (``recipe.accumulate``): the forward GEMM and both backward GEMMs call
``lowp.ops.accumulate.matmul(a, b, accumulate=fmt, chunk=chunk)`` (products exact in FP32, sums rounded in
``fmt``). Linear inputs are flattened to 2-D first so the weight-gradient reduction over batch·tokens is also a
format-accumulated GEMM. Convolutions go through im2col (``F.unfold``): the reduction over C_in·kh·kw (forward),
C_out (grad-input, per column) and N·L (grad-weight) accumulate in the format; the col2im (``F.fold``) sum of
the k² overlapping grad-input contributions is FP32 (an emulation simplification). groups > 1 is not supported
with accumulation.

Attention convention for ``emulated_matmul(a, b)``: the left operand ``a`` takes the ``input`` role and the right
operand ``b`` the ``weight`` role (so dA is ``grad_input`` and dB ``grad_weight``); for q·kᵀ that is q → input,
kᵀ → weight; for p·v, p → input, v → weight. FP16/FP8 arithmetic is emulated by FP32 compute on rounded values:
no reduced-precision matmul is ever called.
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from .context import OpContext


class _RoleQ(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, opctx, fwd_role, bwd_role, chan_axis, block_axis, flatten):
        ctx.args = (opctx, bwd_role, chan_axis, block_axis, flatten)
        if fwd_role is None or not opctx.has(fwd_role):
            return x.view_as(x)
        return opctx.quantize(fwd_role, x, chan_axis, block_axis, flatten)

    @staticmethod
    def backward(ctx, g):
        opctx, bwd_role, chan_axis, block_axis, flatten = ctx.args
        if g is not None and bwd_role is not None and opctx.has(bwd_role):
            if g.is_sparse:  # sparse embedding gradient: round its values
                g = g.coalesce()
                g = torch.sparse_coo_tensor(g.indices(), opctx.quantize(bwd_role, g.values(), -1, -1), g.shape)
            else:
                g = opctx.quantize(bwd_role, g, chan_axis, block_axis, flatten)
        return g, None, None, None, None, None, None


_X, _W = ("input", "grad_input"), ("weight", "grad_weight")  # (forward, backward) roles of a GEMM's operands


def role_q(x: torch.Tensor, opctx: OpContext, fwd_role: str | None, bwd_role: str | None, chan_axis: int = -1,
           block_axis: int = -1, flatten: bool = False) -> torch.Tensor:
    """Round ``x`` as ``fwd_role`` in forward and its gradient as ``bwd_role`` in backward (no-op when unset)."""
    if not ((fwd_role and opctx.has(fwd_role)) or (bwd_role and opctx.has(bwd_role))):
        return x
    if not (x.requires_grad and torch.is_grad_enabled()):
        return opctx.quantize(fwd_role, x, chan_axis, block_axis, flatten) if fwd_role and opctx.has(fwd_role) else x
    return _RoleQ.apply(x, opctx, fwd_role, bwd_role, chan_axis, block_axis, flatten)


class _PairQ(torch.autograd.Function):
    """Both operands of a GEMM rounded by one node: forward (Q_ra(a), Q_rb(b)), backward (Q_ga(da), Q_gb(db)), each
    pair in one compiled call where the roles allow (``OpContext.quantize_pair``): the bits of two ``_RoleQ``."""

    @staticmethod
    def forward(ctx, a, b, opctx, roles, axes_a, axes_b):
        ctx.args = (opctx, roles, axes_a, axes_b)
        aq, bq = opctx.quantize_pair(roles[0], a, axes_a, roles[1], b, axes_b)
        # an operand that needs no gradient gives a rounded copy that needs none (as _RoleQ's fast exit): the GEMM
        # then skips its gradient (the first layer's dx)
        for need, q in zip(ctx.needs_input_grad[:2], (aq, bq)):
            if not need:
                ctx.mark_non_differentiable(q)
        return aq, bq

    @staticmethod
    def backward(ctx, ga, gb):
        opctx, (_, _, bwd_a, bwd_b), axes_a, axes_b = ctx.args
        ga = ga if ctx.needs_input_grad[0] else None
        gb = gb if ctx.needs_input_grad[1] else None
        qa = ga is not None and bwd_a is not None and opctx.has(bwd_a)
        qb = gb is not None and bwd_b is not None and opctx.has(bwd_b)
        if qa and qb:  # b's first: the order in which autograd ran the two _RoleQ (a stochastic key each)
            gb, ga = opctx.quantize_pair(bwd_b, gb, axes_b, bwd_a, ga, axes_a)
        elif qa:
            ga = opctx.quantize(bwd_a, ga, *axes_a)
        elif qb:
            gb = opctx.quantize(bwd_b, gb, *axes_b)
        return ga, gb, None, None, None, None


def pair_q(a: torch.Tensor, b: torch.Tensor, opctx: OpContext, roles_a: tuple, roles_b: tuple, axes_a: tuple = (-1, -1, False),
           axes_b: tuple = (-1, -1, False)) -> tuple[torch.Tensor, torch.Tensor]:
    """``(role_q(a, opctx, *roles_a, *axes_a), role_q(b, opctx, *roles_b, *axes_b))`` through one ``_PairQ`` node
    when both forward roles are set (roles: (forward role, backward role); axes: (chan_axis, block_axis,
    flatten)); the same bits."""
    if not (roles_a[0] and roles_b[0] and opctx.has(roles_a[0]) and opctx.has(roles_b[0])) or a.is_sparse \
            or b.is_sparse:
        return role_q(a, opctx, *roles_a, *axes_a), role_q(b, opctx, *roles_b, *axes_b)
    if not (torch.is_grad_enabled() and (a.requires_grad or b.requires_grad)):
        return opctx.quantize_pair(roles_a[0], a, axes_a, roles_b[0], b, axes_b)
    return _PairQ.apply(a, b, opctx, (roles_a[0], roles_b[0], roles_a[1], roles_b[1]), axes_a, axes_b)


class _AccMatmul(torch.autograd.Function):
    """a @ b with accumulation in a format, forward and both backward GEMMs (a: (..., M, K), b: (..., K, N))."""

    @staticmethod
    def forward(ctx, a, b, fmt, chunk, fmt_bwd):
        from .accumulate import matmul

        ctx.save_for_backward(a, b)
        ctx.fmt, ctx.chunk = fmt_bwd, chunk
        return matmul(a, b, accumulate=fmt, chunk=chunk)

    @staticmethod
    def backward(ctx, g):
        from .accumulate import matmul

        a, b = ctx.saved_tensors
        ga = gb = None
        if ctx.needs_input_grad[0]:
            ga = matmul(g, b.transpose(-1, -2), accumulate=ctx.fmt, chunk=ctx.chunk)
            ga = ga.sum_to_size(a.shape) if ga.shape != a.shape else ga
        if ctx.needs_input_grad[1]:
            gb = matmul(a.transpose(-1, -2), g, accumulate=ctx.fmt, chunk=ctx.chunk)
            gb = gb.sum_to_size(b.shape) if gb.shape != b.shape else gb
        return ga, gb, None, None, None


#: operand roles of y = a @ b: (a@fwd, b@fwd, a's gradient, b's gradient, b@dgrad(a), a@wgrad(b),
#: dy@grad(a), dy@grad(b)) when b is the weight (x @ Wᵀ), and when a is the weight (W @ x)
_CAST_RIGHT = ("input", "weight", "grad_input", "grad_weight", "weight_dgrad", "input_wgrad", "grad_output",
               "grad_output_wgrad")
_CAST_LEFT = ("weight", "input", "grad_weight", "grad_input", "input_wgrad", "weight_dgrad", "grad_output_wgrad",
              "grad_output")


def _mm(a: torch.Tensor, b: torch.Tensor, opctx: OpContext, backward: bool = False) -> torch.Tensor:
    acc = opctx.accumulate_bwd if backward else opctx.accumulate
    if acc is None:
        return torch.matmul(a, b)
    from .accumulate import matmul

    return matmul(a, b, accumulate=acc, chunk=opctx.chunk)


class _CastGemm(torch.autograd.Function):
    """y = a @ b (a: (..., M, K), b: (..., K, N) or (K, N)) with each operand of each of the three GEMMs cast on
    its own, from the high-precision a and b (docs/accelerator-recipes.md; Transformer Engine's rowwise/columnwise copies):

        forward  y  = Q(a, along K) · Q(b, along K)
        grad a   da = Q(dy, along N) · Q(b, along N)ᵀ
        grad b   db = Q(a, along M)ᵀ · Q(dy, along M)

    with the roles of ``roles`` (``_CAST_RIGHT``/``_CAST_LEFT``). A cast the recipe leaves unset reuses the copy of
    the other GEMM (forward's for a and b, the first backward GEMM's for dy), as the one-cast path does."""

    @staticmethod
    def forward(ctx, a, b, opctx, roles, linear):
        ra, rb = roles[0], roles[1]
        ctx.linear = linear
        aq = opctx.quantize(ra, a, -1, -1) if opctx.has(ra) else a
        bq = opctx.quantize(rb, b, -1, -2) if opctx.has(rb) else b
        ctx.save_for_backward(a, b, aq, bq)
        ctx.opctx, ctx.roles = opctx, roles
        return _mm(aq, bq, opctx)

    @staticmethod
    def backward(ctx, g):
        a, b, aq, bq = ctx.saved_tensors
        opctx = ctx.opctx
        _, _, ga_role, gb_role, b_dg, a_wg, g_dg, g_wg = ctx.roles

        def cast(role, x, axis, fallback):
            if opctx.has(role):
                return opctx.quantize(role, x, axis, axis)
            return x if role in opctx.high_precision else fallback

        g1 = cast(g_dg, g, -1, g)  # the first backward GEMM's dy: its own cast, else high precision
        da = db = None
        if ctx.needs_input_grad[0]:
            da = _mm(g1, cast(b_dg, b, -1, bq).transpose(-1, -2), opctx, backward=True)
            da = opctx.quantize(ga_role, da, -1, -1) if opctx.has(ga_role) else da
        if ctx.needs_input_grad[1]:
            a_src, g_src = a, g
            if opctx.rht is not None:  # both wgrad operands rotated along the reduction axis M: dW unchanged
                # (M not a multiple of the block: both zero-padded to one first, which adds nothing to dW)
                a_src, g_src = opctx.rht.apply(a, -2, pad=True), opctx.rht.apply(g, -2, pad=True)
            a2 = cast(a_wg, a_src, -2, aq)
            g2 = cast(g_wg, g_src, -2, g1)
            if b.dim() == 2 and a.dim() > 2:
                a2, g2 = a2.reshape(-1, a2.shape[-1]), g2.reshape(-1, g2.shape[-1])
            # the orientation of torch's own backward: linear computes dW = dyᵀ·x (then db = dWᵀ), matmul aᵀ·dy
            db = _mm(g2.transpose(-1, -2), a2, opctx, True).transpose(-1, -2) if ctx.linear else \
                _mm(a2.transpose(-1, -2), g2, opctx, True)
            db = opctx.quantize(gb_role, db, -1, -1) if opctx.has(gb_role) else db
        return da, db, None, None, None


def cast_gemm(a: torch.Tensor, b: torch.Tensor, opctx: OpContext, weight_left: bool = False,
              linear: bool = False) -> torch.Tensor:
    """``a @ b`` through ``_CastGemm`` (recipes with per-GEMM operand casts); b may be 2-D under a batched a;
    ``linear``: b is Wᵀ of a linear layer (the weight gradient is computed as dyᵀ·x, as torch's linear does).
    dy must reach it in high precision (the caller does not round grad_output)."""
    if b.dim() > 2 and a.shape[:-2] != b.shape[:-2]:
        raise NotImplementedError(f"emulated op {opctx.name!r}: per-GEMM operand casts need equal batch shapes, "
                                  f"got {tuple(a.shape)} @ {tuple(b.shape)}")
    return _CastGemm.apply(a, b, opctx, _CAST_LEFT if weight_left else _CAST_RIGHT, linear)


def _gemm(a: torch.Tensor, b: torch.Tensor, opctx: OpContext) -> torch.Tensor:
    if opctx.plain:
        return torch.matmul(a, b)
    return _AccMatmul.apply(a, b, opctx.accumulate, opctx.chunk, opctx.accumulate_bwd)


def emulated_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                    opctx: OpContext) -> torch.Tensor:
    """y = x·Wᵀ + b with every role rounded per ``opctx`` (see module docstring)."""
    bias = role_q(bias, opctx, "bias", "bias") if bias is not None else None
    if opctx.per_gemm:
        k = x.shape[-1]
        y = cast_gemm(x.reshape(-1, k), weight.t(), opctx, linear=True).reshape(*x.shape[:-1], weight.shape[0])
        # dy reaches the GEMMs in high precision: each backward GEMM casts it itself (the bias gradient is the
        # FP32 sum of the high-precision dy, as Transformer Engine computes it)
        return role_q(y if bias is None else y + bias, opctx, "output", None, -1, -1)
    xq, wq = pair_q(x, weight, opctx, _X, _W, (-1, -1, False), (0, -1, False))
    if opctx.plain:
        y = F.linear(xq, wq, bias)
    else:
        k = xq.shape[-1]
        y = _gemm(xq.reshape(-1, k), wq.t(), opctx).reshape(*xq.shape[:-1], wq.shape[0])
        if bias is not None:
            y = y + bias
    return role_q(y, opctx, "output", "grad_output", -1, -1)


def _conv_acc(xq: torch.Tensor, wq: torch.Tensor, bias, stride, padding, dilation, groups, opctx) -> torch.Tensor:
    """2-D convolution as im2col + format-accumulated GEMM (x: (N, C, H, W), w: (Co, C, kh, kw))."""
    if groups != 1:
        raise NotImplementedError(f"emulated conv with accumulation supports groups=1 only, got groups={groups}")
    n, _, h, w_ = xq.shape
    co, _, kh, kw = wq.shape
    cols = F.unfold(xq, (kh, kw), dilation=dilation, padding=padding, stride=stride)  # (N, C·kh·kw, L)
    oh = (h + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    ow = (w_ + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    a = cols.transpose(1, 2).reshape(n * oh * ow, -1)
    y = _gemm(a, wq.reshape(co, -1).t(), opctx)  # (N·L, Co)
    y = y.reshape(n, oh * ow, co).transpose(1, 2).reshape(n, co, oh, ow)
    if bias is not None:
        y = y + bias.reshape(1, co, 1, 1)
    return y


def _pair(v: Any) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)  # type: ignore[return-value]


def emulated_conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, opctx: OpContext,
                    stride=1, padding=0, dilation=1, groups: int = 1) -> torch.Tensor:
    """Conv2d with roles rounded per ``opctx``; ``padding`` an int/pair (string padding: pre-pad with F.pad)."""
    xq, wq = pair_q(x, weight, opctx, _X, _W, (1, 1, False), (0, -1, True))
    bias = role_q(bias, opctx, "bias", "bias") if bias is not None else None
    if opctx.plain:
        y = F.conv2d(xq, wq, bias, stride, padding, dilation, groups)
    else:
        y = _conv_acc(xq, wq, bias, _pair(stride), _pair(padding), _pair(dilation), groups, opctx)
    return role_q(y, opctx, "output", "grad_output", 1, 1)


def emulated_conv1d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, opctx: OpContext,
                    stride=1, padding=0, dilation=1, groups: int = 1) -> torch.Tensor:
    """Conv1d with roles rounded per ``opctx`` (with accumulation: as a conv2d of height 1)."""
    xq, wq = pair_q(x, weight, opctx, _X, _W, (1, 1, False), (0, -1, True))
    bias = role_q(bias, opctx, "bias", "bias") if bias is not None else None
    if opctx.plain:
        y = F.conv1d(xq, wq, bias, stride, padding, dilation, groups)
    else:
        one = lambda v: v[0] if isinstance(v, (tuple, list)) else v  # noqa: E731
        y = _conv_acc(xq.unsqueeze(2), wq.unsqueeze(2), bias, (1, one(stride)), (0, one(padding)),
                      (1, one(dilation)), groups, opctx).squeeze(2)
    return role_q(y, opctx, "output", "grad_output", 1, 1)


def emulated_matmul(a: torch.Tensor, b: torch.Tensor, opctx: OpContext) -> torch.Tensor:
    """a @ b (batched like torch.matmul) for attention: a is the ``input`` role, b the ``weight`` role."""
    aq, bq = pair_q(a, b, opctx, _X, _W, (-1, -1, False), (-1, -2, False))
    return role_q(_gemm(aq, bq, opctx), opctx, "output", "grad_output", -1, -1)


def emulated_embedding(idx: torch.Tensor, weight: torch.Tensor, opctx: OpContext, padding_idx=None,
                       max_norm=None, norm_type: float = 2.0, scale_grad_by_freq: bool = False,
                       sparse: bool = False) -> torch.Tensor:
    """Embedding lookup: the table is the ``weight`` role (its gradient ``grad_weight``), the gathered rows the
    ``output`` role (their gradient ``grad_output``); indices are not rounded."""
    if max_norm is not None:  # renormalises the table in place first, as torch does
        with torch.no_grad():
            torch.embedding_renorm_(weight, idx, max_norm, norm_type)
    wq = role_q(weight, opctx, "weight", "grad_weight", 0, -1)
    y = F.embedding(idx, wq, padding_idx, None, norm_type, scale_grad_by_freq, sparse)
    return role_q(y, opctx, "output", "grad_output", -1, -1)


def emulated_product(a: torch.Tensor, b: torch.Tensor, opctx: OpContext, call, *, weight_left: bool = False,
                     axes: tuple[int, int] | None = None, finish=None, bias=None) -> torch.Tensor:
    """``call(Q(a), Q(b), Q(bias))`` with the output role rounded: the shared emulation of ``matmul``/``mm``/
    ``bmm``/``addmm``/``baddbmm``/two-operand ``einsum`` calls (``lowp.recipes.capture``; ``bias`` the added term of
    addmm/baddbmm, rounded as the ``bias`` role).

    Roles: ``b`` is the weight (``a`` the input) unless ``weight_left`` (``W @ x``); blocks run along the reduction
    axis, ``axes`` = (a's, b's) (default a's last and b's second-to-last, as for matmul). With
    ``opctx.accumulate`` the product is a format-accumulated ``a @ b`` followed by ``finish`` (bias terms); einsum
    has no accumulated form and refuses.
    """
    ax_a, ax_b = axes if axes is not None else (-1, -2)
    if bias is not None:
        bias = role_q(bias, opctx, "bias", "bias")
    if opctx.per_gemm and axes is None:
        if b.dim() == 2 and a.dim() > 2 and not weight_left:
            y = cast_gemm(a.reshape(-1, a.shape[-1]), b, opctx).reshape(*a.shape[:-1], b.shape[-1])
        else:
            y = cast_gemm(a, b, opctx, weight_left)
        y = y if finish is None else finish(y, bias)
        return role_q(y, opctx, "output", None, -1, -1)
    if weight_left:
        aq, bq = pair_q(a, b, opctx, _W, _X, (-2, ax_a, False), (-1, ax_b, False))
    else:
        aq, bq = pair_q(a, b, opctx, _X, _W, (-1, ax_a, False), (-1, ax_b, False))
    if opctx.plain:
        y = call(aq, bq, bias)
    else:
        if axes is not None:
            raise NotImplementedError(f"emulated op {opctx.name!r}: einsum with format accumulation is not "
                                      "supported (write it as a matmul)")
        y = _gemm(aq, bq, opctx)
        y = y if finish is None else finish(y, bias)
    return role_q(y, opctx, "output", "grad_output", -1, -1)


def emulated_conv(op: str, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, opctx: OpContext,
                  stride=1, padding=0, dilation=1, groups: int = 1) -> torch.Tensor:
    """A functional ``F.conv1d/2d/3d`` call with roles rounded per ``opctx`` (captured calls; string padding and
    conv3d are supported without format accumulation)."""
    if op == "conv2d" and (opctx.plain or not isinstance(padding, str)):
        return emulated_conv2d(x, weight, bias, opctx, stride, padding, dilation, groups)
    if op == "conv1d" and (opctx.plain or not isinstance(padding, str)):
        return emulated_conv1d(x, weight, bias, opctx, stride, padding, dilation, groups)
    if not opctx.plain:
        raise NotImplementedError(f"emulated op {opctx.name!r}: {op} with padding={padding!r} and format "
                                  "accumulation is not supported")
    xq, wq = pair_q(x, weight, opctx, _X, _W, (1, 1, False), (0, -1, True))
    bias = role_q(bias, opctx, "bias", "bias") if bias is not None else None
    y = F.conv3d(xq, wq, bias, stride, padding, dilation, groups)
    return role_q(y, opctx, "output", "grad_output", 1, 1)


_CAUSAL: dict[tuple[int, int, torch.device, torch.dtype], torch.Tensor] = {}


def _causal_bias(L: int, S: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """The (L, S) additive causal mask, -inf where j > i and 0 elsewhere (what torch's math attention adds), built
    once per shape, device and dtype (read-only: only ever an operand)."""
    key = (L, S, device, dtype)
    m = _CAUSAL.get(key)
    if m is None:
        if len(_CAUSAL) > 64:
            _CAUSAL.clear()
        above = ~torch.ones(L, S, dtype=torch.bool, device=device).tril()
        m = _CAUSAL[key] = torch.zeros(L, S, dtype=dtype, device=device).masked_fill_(above, float("-inf"))
    return m


def emulated_sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, ctx_qk: OpContext | None,
                  ctx_pv: OpContext | None, attn_mask: torch.Tensor | None = None, dropout_p: float = 0.0,
                  is_causal: bool = False, scale: float | None = None, enable_gqa: bool = False) -> torch.Tensor:
    """``F.scaled_dot_product_attention`` as its two products with the softmax between them (Vaswani et al. 2017):

        S = (Q(q)·Q(k)ᵀ)·scale  [+ mask]     P = softmax(S)     O = Q(P)·Q(v)

    each product emulated by ``emulated_matmul`` with its own context (q, kᵀ, P, v take their context's ``input``/
    ``weight`` roles; the scale and masks are applied in FP32 after the rounded product, where FP8 attention
    kernels apply them). ``is_causal`` adds -inf where j > i (top-left aligned; additive, as torch's math attention,
    so a NaN score stays NaN); a boolean ``attn_mask`` keeps True, a float one is added; a row with every key masked
    gives zeros (torch's ``_safe_softmax``). A context of None computes that product in FP32. Dropout is applied to P
    when ``dropout_p > 0`` (as torch, regardless of training mode)."""
    e = q.shape[-1]
    scale = 1.0 / math.sqrt(e) if scale is None else scale
    if enable_gqa and k.dim() >= 3 and k.shape[-3] != q.shape[-3]:
        rep = q.shape[-3] // k.shape[-3]
        k, v = k.repeat_interleave(rep, dim=-3), v.repeat_interleave(rep, dim=-3)
    kt = k.transpose(-2, -1)
    s = emulated_matmul(q, kt, ctx_qk) if ctx_qk is not None else torch.matmul(q, kt)
    may_mask_a_row = False
    if is_causal:  # s·scale + (0 | -inf) in one pass (adding an exact 0 or -inf: the bits of s·scale, then the mask)
        L, S = q.shape[-2], k.shape[-2]
        s = torch.add(_causal_bias(L, S, s.device, s.dtype), s, alpha=scale)
        may_mask_a_row = S == 0  # top-left causal keeps key 0 in every row
    else:
        s = s * scale
    if attn_mask is not None:
        s = s.masked_fill(~attn_mask, float("-inf")) if attn_mask.dtype == torch.bool else s + attn_mask
        may_mask_a_row = True
    # torch's _safe_softmax (zeros for a row with every key masked) costs two more passes: only where a row can be
    # fully masked; elsewhere it gives softmax's bits
    p = torch._safe_softmax(s, -1) if may_mask_a_row else torch.softmax(s, -1)
    if dropout_p > 0:
        p = F.dropout(p, dropout_p, training=True)
    return emulated_matmul(p, v, ctx_pv) if ctx_pv is not None else torch.matmul(p, v)
