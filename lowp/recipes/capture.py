"""Capture of every GEMM-like call of an emulated model, wherever its code makes it.

``lowp.emulate`` swaps the modules it knows (``nn.Linear``/``Conv1d``/``Conv2d``/``Embedding`` of exactly those
types, ``lowp.Matmul``) for their emulated twins. Everything else — a user's ``nn.Linear`` subclass, HF GPT-2's
``Conv1D`` (``torch.addmm``), ``F.linear``/``F.conv*``/``F.embedding`` calls, ``matmul``/``@``/``mm``/``bmm``/
``baddbmm``, two-operand ``einsum``, ``F.scaled_dot_product_attention`` and ``nn.MultiheadAttention`` — is caught by
a ``TorchFunctionMode`` that is active only while a module of the emulated model runs its forward (forward hooks on
every module push and pop it; no global state of torch is touched, ``restore`` removes the hooks). Inside a known
(swapped or exempt) module the mode is off: those run their own emulated or plain forward.

Which operand is the weight: the second operand of ``F.linear``/``F.conv*``, the table of ``F.embedding``, and for
the other products an ``nn.Parameter`` or a view of one. A product with a weight operand takes the recipe's
GEMM roles (input, weight, output, grad_*), named after the module that owns the parameter
(``transformer.h.0.attn.c_attn``). A product with no weight operand (attention q·kᵀ and P·v, a user's
activation×activation matmul) takes the recipe's ``attention`` spec for both operands (output and gradient roles
as the recipe's), named ``<calling module>.<op>`` (``…attn.sdpa.qk``, ``…attn.sdpa.pv``, ``…attn.matmul``); with
``recipe.attention = None`` it stays in high precision. A product whose reduction length is 1 (an outer product,
e.g. rotary-embedding angles) is not a GEMM and stays in high precision. Exempt names (``recipe.exempt`` patterns,
``exempt_first_last``) stay in high precision. The backward GEMMs are emulated by the autograd functions of
``lowp.ops.functions``, so activation checkpointing (whose recomputation runs module forwards again) and
``no_grad``/``inference_mode`` need nothing special.
"""
from __future__ import annotations

import dataclasses
import fnmatch
import math
import re
import threading
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from ..ops import functions as E
from ..ops.context import OpContext
from ..ops.modules import EMULATED, PLAIN, Matmul

#: the attribute a module class sets (True) when it runs its own GEMM emulation (QAT twins): capture leaves it alone
LEAF_ATTR = "_lowp_leaf"


_EMULATED_TYPES = tuple(EMULATED.values())


def is_known_leaf(m: nn.Module) -> bool:
    """Modules that run their own (emulated or exempt-plain) GEMM: swapped twins (also when torch's
    parametrizations subclassed them), exact plain types, ``lowp.Matmul``, classes marked ``_lowp_leaf``."""
    t = type(m)
    return isinstance(m, _EMULATED_TYPES) or t in EMULATED or isinstance(m, Matmul) or \
        bool(getattr(t, LEAF_ATTR, False))


def is_weight(t: Any) -> bool:
    """An ``nn.Parameter`` or a view of one."""
    if not isinstance(t, torch.Tensor):
        return False
    return isinstance(t, nn.Parameter) or isinstance(getattr(t, "_base", None), nn.Parameter)


def _root_param(t: torch.Tensor) -> torch.Tensor:
    return t if isinstance(t, nn.Parameter) else t._base


@dataclasses.dataclass
class CallRecord:
    """One GEMM-like call seen during a forward (coverage rows are built from these)."""

    name: str
    op: str
    shapes: tuple[tuple[int, ...], ...]
    fwd_flops: int
    bwd_flops: int
    emulated: bool
    roles: dict[str, str]
    reason: str = ""


class AttentionRecipe:
    """The recipe as seen by an activation×activation product: both operands take ``recipe.attention``."""

    def __init__(self, recipe: Any) -> None:
        self._r = recipe

    def __getattr__(self, k: str) -> Any:
        if k in ("input", "weight"):
            return self._r.attention
        return getattr(self._r, k)


def _gemm_flops(a_shape, b_shape, out_numel: int) -> int:
    """2·(output elements)·K for a product reducing a's last axis."""
    return 2 * int(out_numel) * int(a_shape[-1]) if len(a_shape) else 0


def _bwd_flops(fwd: int, *operands: Any) -> int:
    if not torch.is_grad_enabled():
        return 0
    return fwd * sum(1 for t in operands if isinstance(t, torch.Tensor) and t.requires_grad)


class _Mode(TorchFunctionMode):
    def __init__(self, state: "CaptureState") -> None:
        super().__init__()
        self.state = state

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        handler = _HANDLERS.get(func)
        if handler is None:
            return func(*args, **kwargs)
        if handler is _reenter:
            return handler(self, func, args, kwargs)
        tls = self.state.tls
        tls.depth = getattr(tls, "depth", 0) + 1
        try:
            return handler(self, func, args, kwargs)
        finally:
            tls.depth -= 1


class _Frame:
    __slots__ = ("name", "was_on", "counts")

    def __init__(self, name: str, was_on: bool) -> None:
        self.name, self.was_on, self.counts = name, was_on, {}


class CaptureState:
    """Per emulated model: the recipe, one OpContext per captured call name, the hooks and the mode."""

    def __init__(self, model: nn.Module, recipe: Any, exempt: set[str]) -> None:
        self.recipe = recipe
        self.exempt_names = exempt
        self.patterns = tuple(recipe.exempt)
        self.contexts: dict[str, OpContext] = {}
        self.param_names: dict[int, str] = {}
        for mname, m in model.named_modules():
            for pname, p in m._parameters.items():
                if p is not None and id(p) not in self.param_names:
                    base = mname if pname == "weight" else ".".join(x for x in (mname, pname.removesuffix("_weight"))
                                                                   if x)
                    self.param_names[id(p)] = base or pname
        self.mode = _Mode(self)
        self.tls = threading.local()
        self.records: list[CallRecord] | None = None
        self.handles: list[Any] = []
        for name, m in model.named_modules():
            leaf = is_known_leaf(m)
            if not (leaf or name == "" or m._modules or m._parameters):
                continue  # a parameterless leaf (activation, dropout, pooling): runs in its parent's mode
            self.handles.append(m.register_forward_pre_hook(self._pre(name, leaf)))
            self.handles.append(m.register_forward_hook(self._post(name, leaf), always_call=True))

    # ---------------------------------------------------------------------------------------- mode on/off
    def _on(self) -> bool:
        return getattr(self.tls, "on", False)

    def _stack(self) -> list[_Frame]:
        st = getattr(self.tls, "stack", None)
        if st is None:
            st = self.tls.stack = []
        return st

    def _set(self, want: bool) -> None:
        if want == self._on():
            return
        if want:
            self.mode.__enter__()
            self.tls.on = True
        else:
            n = torch._C._len_torch_function_stack()
            if n and torch._C._get_function_stack_at(n - 1) is self.mode:
                self.mode.__exit__(None, None, None)
                self.tls.on = False

    def inside(self) -> bool:
        """Whether a call lowp handles (a captured op or a known module's forward) is running now."""
        return getattr(self.tls, "depth", 0) > 0

    def _pre(self, name: str, leaf: bool) -> Callable:
        def hook(module, args):
            self._stack().append(_Frame(name, self._on()))
            self._set(not leaf)
            if leaf:
                self.tls.depth = getattr(self.tls, "depth", 0) + 1
        return hook

    def _post(self, name: str, leaf: bool) -> Callable:
        def hook(module, args, output):
            st = self._stack()
            if leaf:
                self.tls.depth -= 1
            if st:
                frame = st.pop()
                self._set(frame.was_on)
                if leaf and self.records is not None and isinstance(output, torch.Tensor):
                    self._record_leaf(frame.name, module, args, output)
            return None
        return hook

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles.clear()

    # ------------------------------------------------------------------------------------------- naming
    def _unique(self, base: str) -> str:
        st = self._stack()
        if not st:
            return base
        counts = st[-1].counts
        i = counts.get(base, 0)
        counts[base] = i + 1
        return base if i == 0 else f"{base}_{i}"

    def caller(self) -> str:
        st = self._stack()
        return st[-1].name if st else ""

    def weight_name(self, w: torch.Tensor) -> str:
        """The owning module's path for a parameter (or a view of one), else the calling module's."""
        owner = self.param_names.get(id(_root_param(w))) if is_weight(w) else None
        return self._unique(owner or self.caller() or "linear")

    def act_name(self, op: str) -> str:
        return self._unique(".".join(x for x in (self.caller(), op) if x))

    def exempt(self, name: str) -> bool:
        return name in self.exempt_names or any(fnmatch.fnmatchcase(name, p) for p in self.patterns)

    def context(self, name: str, attention: bool) -> OpContext | None:
        """The OpContext for call ``name`` (None: stays in high precision)."""
        if self.exempt(name) or (attention and self.recipe.attention is None):
            return None
        ctx = self.contexts.get(name)
        if ctx is None:
            rec = AttentionRecipe(self.recipe) if attention else self.recipe
            ctx = self.contexts[name] = OpContext(rec, name=name, recipe_name=self.recipe.name)
        return ctx

    def reason(self, name: str, attention: bool) -> str:
        if self.exempt(name):
            return "exempt (recipe.exempt / exempt_first_last)"
        if attention and self.recipe.attention is None:
            return "attention kept in high precision (recipe.attention is None)"
        return ""

    # ------------------------------------------------------------------------------------------ records
    def record(self, name: str, op: str, operands: tuple, out: Any, ctx: OpContext | None, fwd: int,
               bwd: int, reason: str = "") -> None:
        if self.records is None:
            return
        shapes = tuple(tuple(t.shape) for t in operands if isinstance(t, torch.Tensor))
        roles = {} if ctx is None else {r: s.format for r, s in ctx.specs.items()}
        emulated = ctx is not None and ctx.has("input") and ctx.has("weight")
        if ctx is not None and not emulated:
            reason = reason or "the recipe leaves an operand of this GEMM in FP32"
        self.records.append(CallRecord(name, op, shapes, int(fwd), int(bwd), emulated, roles, reason))

    def _record_leaf(self, name: str, m: nn.Module, args: tuple, out: Any) -> None:
        ctx = getattr(m, "lowp_ctx", None)
        x = args[0] if args else None
        if isinstance(m, Matmul):
            a, b = args[0], args[1]
            fwd = _gemm_flops(a.shape, b.shape, out.numel())
            self.record(name, "matmul", (a, b), out, ctx, fwd, _bwd_flops(fwd, a, b),
                        "" if ctx else "attention kept in high precision (recipe.attention is None)")
            return
        w = m.weight
        if isinstance(m, nn.Embedding):
            self.record(name, "embedding", (x, w), out, ctx, 0, 0, "" if ctx else "exempt")
            return
        if isinstance(m, nn.Linear):
            fwd = 2 * out.numel() * w.shape[1]
        else:  # conv: each output element is a dot product of length C_in/groups · prod(kernel)
            fwd = 2 * out.numel() * (w[0].numel())
        op = PLAIN.get(type(m), type(m)).__name__.lower()
        self.record(name, op, (x, w), out, ctx, fwd, _bwd_flops(fwd, x, w),
                    "" if ctx else "exempt (recipe.exempt / exempt_first_last)")


# -------------------------------------------------------------------------------------------- handlers
def _linear(mode, func, args, kwargs):
    st = mode.state
    x, w = args[0], args[1]
    b = args[2] if len(args) > 2 else kwargs.get("bias")
    name = st.weight_name(w)
    ctx = st.context(name, attention=False)
    y = func(*args, **kwargs) if ctx is None else E.emulated_linear(x, w, b, ctx)
    fwd = 2 * y.numel() * w.shape[-1]
    st.record(name, "linear", (x, w), y, ctx, fwd, _bwd_flops(fwd, x, w), st.reason(name, False))
    return y


def _pick(a, b):
    """(attention?, name, weight_left?) for a product a·b: a weight is a Parameter or a view of one."""
    if is_weight(b):
        return False, b, False
    if is_weight(a):
        return False, a, True
    return True, None, False


def _product(mode, func, op: str, a, b, call: Callable, finish: Callable | None = None, bias=None):
    """Shared path of matmul/mm/bmm/addmm/baddbmm: ``call(aq, bq)`` computes the product of the rounded
    operands (``finish(aq @ bq)`` what follows a format-accumulated product)."""
    st = mode.state
    k = a.shape[-1] if a.dim() else 1
    attention, w, left = _pick(a, b)
    name = st.act_name(op) if attention else st.weight_name(w)
    ctx = None if k == 1 else st.context(name, attention)
    if ctx is not None:
        y = E.emulated_product(a, b, ctx, call, weight_left=left, finish=finish, bias=bias)
    else:
        y = call(a, b, bias)
    fwd = _gemm_flops(a.shape, b.shape, y.numel() if isinstance(y, torch.Tensor) else 0)
    reason = "reduction length 1 (outer product, not a GEMM)" if k == 1 else st.reason(name, attention)
    st.record(name, op, (a, b), y, ctx, fwd, _bwd_flops(fwd, a, b), reason)
    return y


def _matmul(mode, func, args, kwargs):
    a, b = args[0], args[1]
    if func is torch.Tensor.__rmatmul__:
        a, b = b, a
    if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)) or a.dim() == 0 or b.dim() == 0 or kwargs:
        return func(*args, **kwargs)
    if a.dim() == 1 or b.dim() == 1:  # vector products: not GEMMs
        return func(*args, **kwargs)
    op = {torch.bmm: "bmm", torch.Tensor.bmm: "bmm", torch.mm: "mm", torch.Tensor.mm: "mm"}.get(func, "matmul")
    return _product(mode, func, op, a, b, lambda x, y, _: torch.matmul(x, y))


def _addmm(mode, func, args, kwargs):
    bias, a, b = args[0], args[1], args[2]
    beta, alpha = kwargs.get("beta", 1), kwargs.get("alpha", 1)
    if len(args) > 3 or kwargs.keys() - {"beta", "alpha"}:
        return func(*args, **kwargs)
    fn = torch.addmm if func in (torch.addmm, torch.Tensor.addmm) else torch.baddbmm
    op = "addmm" if fn is torch.addmm else "baddbmm"
    return _product(mode, func, op, a, b, lambda x, y, c: fn(c, x, y, beta=beta, alpha=alpha),
                    finish=lambda p, c: (p if alpha == 1 else alpha * p) + (c if beta == 1 else beta * c), bias=bias)


_EINSUM = re.compile(r"^\s*([a-zA-Z.\s]*),([a-zA-Z.\s]*)->([a-zA-Z.\s]*)$")


def _einsum(mode, func, args, kwargs):
    eq, ops = args[0], args[1:]
    if len(ops) == 1 and isinstance(ops[0], (list, tuple)):
        ops = tuple(ops[0])
    m = _EINSUM.match(eq.replace(" ", "")) if isinstance(eq, str) else None
    if kwargs or len(ops) != 2 or m is None or "." in eq:
        return func(*args, **kwargs)
    a, b = ops
    sa, sb, so = m.group(1), m.group(2), m.group(3)
    red = [c for c in sa if c in sb and c not in so]
    k = math.prod(a.shape[sa.index(c)] for c in red) if red else 1
    st = mode.state
    attention, w, left = _pick(a, b)
    name = st.act_name("einsum") if attention else st.weight_name(w)
    ctx = None if k == 1 else st.context(name, attention)
    axes = ((sa.index(red[0]) - len(sa), sb.index(red[0]) - len(sb)) if len(red) == 1 else (-1, -1))
    call = lambda x, y, _: torch.einsum(eq, x, y)  # noqa: E731
    y = E.emulated_product(a, b, ctx, call, weight_left=left, axes=axes) if ctx is not None else call(a, b, None)
    fwd = 2 * y.numel() * k
    reason = "no reduction (not a GEMM)" if k == 1 else st.reason(name, attention)
    st.record(name, "einsum", (a, b), y, ctx, fwd, _bwd_flops(fwd, a, b), reason)
    return y


def _conv(mode, func, args, kwargs):
    st = mode.state
    x, w = args[0], args[1]
    rest = list(args[2:])
    names = ("bias", "stride", "padding", "dilation", "groups")
    full = dict(zip(names, rest)) | kwargs
    name = st.weight_name(w)
    ctx = st.context(name, attention=False)
    op = {F.conv1d: "conv1d", F.conv2d: "conv2d", F.conv3d: "conv3d"}[func]
    if ctx is None:
        y = func(*args, **kwargs)
    else:
        y = E.emulated_conv(op, x, w, full.get("bias"), ctx, full.get("stride", 1), full.get("padding", 0),
                            full.get("dilation", 1), full.get("groups", 1))
    fwd = 2 * y.numel() * w[0].numel()
    st.record(name, op, (x, w), y, ctx, fwd, _bwd_flops(fwd, x, w), st.reason(name, False))
    return y


def _embedding(mode, func, args, kwargs):
    st = mode.state
    names = ("input", "weight", "padding_idx", "max_norm", "norm_type", "scale_grad_by_freq", "sparse")
    full = dict(zip(names, args)) | kwargs
    idx, w = full["input"], full["weight"]
    name = st.weight_name(w)
    ctx = st.context(name, attention=False)
    if ctx is None:
        y = func(*args, **kwargs)
    else:
        y = E.emulated_embedding(idx, w, ctx, full.get("padding_idx"), full.get("max_norm"),
                                 full.get("norm_type", 2.0), full.get("scale_grad_by_freq", False),
                                 full.get("sparse", False))
    st.record(name, "embedding", (idx, w), y, ctx, 0, 0, st.reason(name, False))
    return y


def _sdpa(mode, func, args, kwargs):
    st = mode.state
    names = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa")
    full = dict(zip(names, args)) | kwargs
    q, k, v = full["query"], full["key"], full["value"]
    nq, nv = st.act_name("sdpa.qk"), st.act_name("sdpa.pv")
    cq, cv = st.context(nq, True), st.context(nv, True)
    if cq is None and cv is None:
        y = func(*args, **kwargs)
    else:
        y = E.emulated_sdpa(q, k, v, cq, cv, full.get("attn_mask"), full.get("dropout_p", 0.0),
                            full.get("is_causal", False), full.get("scale"), full.get("enable_gqa", False))
    heads = q.shape[:-2]
    f_qk = 2 * math.prod(heads) * q.shape[-2] * k.shape[-2] * q.shape[-1]
    f_pv = 2 * math.prod(heads) * q.shape[-2] * k.shape[-2] * v.shape[-1]
    st.record(nq, "sdpa.qk", (q, k), y, cq, f_qk, _bwd_flops(f_qk, q, k), st.reason(nq, True))
    st.record(nv, "sdpa.pv", (q, v), y, cv, f_pv, _bwd_flops(f_pv, q, v), st.reason(nv, True))
    return y


_UNDISPATCHED: dict[Any, Callable] = {}


def _undispatched(func: Callable) -> Callable:
    """A private copy of torch's Python function ``func`` whose own ``has_torch_function`` test is false, so
    that it can run with the mode on without dispatching to it again (torch itself is not modified)."""
    fn = _UNDISPATCHED.get(func)
    if fn is None:
        import types

        g = dict(func.__globals__, has_torch_function=lambda *a: False)
        fn = _UNDISPATCHED[func] = types.FunctionType(func.__code__, g, func.__name__, func.__defaults__,
                                                       func.__closure__)
        fn.__kwdefaults__ = func.__kwdefaults__
    return fn


def _reenter(mode, func, args, kwargs):
    """Python compositions (``F.multi_head_attention_forward``): run with the mode on, so their inner products
    (``linear``, ``scaled_dot_product_attention``, ``bmm``/``baddbmm``) are captured one by one."""
    with mode:
        return _undispatched(func)(*args, **kwargs)


_HANDLERS: dict[Any, Callable] = {
    F.linear: _linear,
    torch.matmul: _matmul, torch.Tensor.matmul: _matmul, torch.Tensor.__matmul__: _matmul,
    torch.Tensor.__rmatmul__: _matmul, torch.mm: _matmul, torch.Tensor.mm: _matmul, torch.bmm: _matmul,
    torch.Tensor.bmm: _matmul,
    torch.addmm: _addmm, torch.Tensor.addmm: _addmm, torch.baddbmm: _addmm, torch.Tensor.baddbmm: _addmm,
    torch.einsum: _einsum,
    F.conv1d: _conv, F.conv2d: _conv, F.conv3d: _conv,
    F.embedding: _embedding,
    F.scaled_dot_product_attention: _sdpa,
    F.multi_head_attention_forward: _reenter,
}
