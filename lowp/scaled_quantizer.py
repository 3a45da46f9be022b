"""The one scaled quantizer: x_q = Q(x·s) / s for a tensor role, used by the emulated ops (``ops/context.py``), the
optimizer's master weights and state (``recipes/optim.py``) and the low-precision all-reduce (``distributed/``).

    scaling "none"         s = 1: x_q = Q(x)
    scaling "current"      s = (fmt.max / amax(x)) / 2^margin                      (per tensor, ``scaling.amax_scale``)
    scaling "delayed"      as current with amax = max of the last ``history`` amaxes (Transformer Engine's
                           DelayedScaling, ``scaling.DelayedScaler``); the history lives in the quantizer
    scaling "per-channel"  as current with one amax per slice along ``chan_axis``

amax = 0 or a non-finite amax gives s = 1 (NaN stays NaN). The fastest path that gives the same bits is taken:
native casts (bf16/fp16 round to nearest, no saturation), a format's compiled short path (round to nearest or
stochastic; with current scaling amax, scale and Q(x·s)/s are one compiled graph, ``formats/round_short_compiled.py``), the
compiled general kernel, else the format's own ``quantize``. Every path is tested bit for bit against the eager three
steps.
``quantize_pair`` rounds two tensors (a GEMM's two operands) in one compiled call where both take a short path.
"""
from __future__ import annotations

import itertools
import types
from typing import Any, Callable

import torch

from .formats import FloatFormat, Format, compiling, dispatch, get_format, round_short_compiled
from .rounding import check_rand_bits, draw_key
from .scaling import DelayedScaler, amax_scale, channel_amax, current_scale

SCALINGS = ("none", "current", "delayed", "per-channel")
_NATIVE = {"bf16": torch.bfloat16, "fp16": torch.float16}


class ScaledQuantizer:
    """Q(x·s)/s with one format, rounding (``saturate``, ``rand_bits``) and scaling rule (see the module docstring)."""

    def __init__(self, fmt: str | Format, rounding: str = "nearest", *, saturate: bool = False,
                 rand_bits: int | None = None, scaling: str = "none", margin: int = 0, history: int = 16,
                 any_size: bool = True) -> None:
        self.fmt = get_format(fmt)
        if scaling not in SCALINGS:
            raise ValueError(f"unknown scaling {scaling!r}; valid: {', '.join(SCALINGS)}")
        if scaling != "none" and self.fmt.info.max is None:
            raise ValueError(f"scaling {scaling!r} needs a format with a finite max; {self.fmt.name!r} has none "
                             "(scaled/block formats carry their own scale)")
        self.rounding, self.saturate, self.rand_bits = rounding, bool(saturate), rand_bits
        self.scaling, self.margin = scaling, int(margin)
        self.delayed = DelayedScaler(history, margin) if scaling == "delayed" else None
        # compiled kernels at every tensor size (a role rounded every step: compiling once always pays), or, as
        # lowp.quantize, only from compiling.FAST_MIN_NUMEL elements
        self.any_size = bool(any_size)
        self._fast: Callable[[torch.Tensor], torch.Tensor] | None | bool = False  # resolved on first use
        self._key: tuple | None = None  # the short-path kernel's arguments (``_short_path_key``), with _fast

    @classmethod
    def from_spec(cls, spec: Any) -> "ScaledQuantizer":
        """From a ``TensorSpec``-like object (duck-typed: this layer does not import ``lowp.recipes``)."""
        return cls(spec.format, spec.rounding, saturate=spec.saturate, rand_bits=spec.rand_bits,
                   scaling=spec.scaling, margin=spec.margin, history=spec.history)

    def __repr__(self) -> str:
        return (f"ScaledQuantizer({self.fmt.name!r}, {self.rounding!r}, saturate={self.saturate}, "
                f"scaling={self.scaling!r}, margin={self.margin})")

    # --- the pieces ----------------------------------------------------------------------------------------------
    def scale(self, x: torch.Tensor, chan_axis: int = -1) -> torch.Tensor | None:
        """The scale for x (None for scaling "none"); a delayed quantizer records amax(x) in its history."""
        if self.scaling == "none":
            return None
        if self.scaling == "current":
            return current_scale(x, self.fmt, self.margin)
        if self.scaling == "delayed":
            return self.delayed.scale(x, self.fmt)
        return amax_scale(channel_amax(x, chan_axis), float(self.fmt.info.max), self.margin)

    def round(self, x: torch.Tensor, generator: torch.Generator | None = None,
              fmt: Format | None = None) -> torch.Tensor:
        """Q(x) (no scaling) on ``fmt`` (default this quantizer's; the ops pass block formats re-oriented along
        their GEMM's reduction axis)."""
        fmt = self.fmt if fmt is None else fmt
        if isinstance(fmt, FloatFormat) and x.dtype == torch.float32:
            native = _NATIVE.get(fmt.name)
            if native is not None and self.rounding == "nearest" and not self.saturate:
                return x.to(native).to(torch.float32)
            force = ("compiled" if compiling.compile_enabled() else "eager") if self.any_size else None
            return dispatch.float_dispatch(x.contiguous(), fmt, self.rounding, self.saturate,
                                       check_rand_bits(self.rand_bits), generator, None, force=force)
        if not self.any_size:
            return fmt.quantize(x, self.rounding, saturate=self.saturate, rand_bits=self.rand_bits,
                                generator=generator)
        with compiling.compiled_at_any_size():
            return fmt.quantize(x, self.rounding, saturate=self.saturate, rand_bits=self.rand_bits,
                                generator=generator)

    # --- the whole ---------------------------------------------------------------------------------------------
    def _fast_ok(self, x: torch.Tensor) -> bool:
        """Whether ``x`` may take this quantizer's compiled short path (float32, its size, compile enabled)."""
        return (x.dtype == torch.float32 and (self.any_size or x.numel() >= compiling.FAST_MIN_NUMEL)
                and x.numel() < dispatch.MAX_NUMEL and compiling.compile_enabled())

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, chan_axis: int = -1, *, generator: torch.Generator | None = None,
                 fmt: Format | None = None,
                 observe: Callable[[torch.Tensor, torch.Tensor], None] | None = None) -> torch.Tensor:
        """Q(x·s)/s. ``observe(xs, q)`` (if given) sees the scaled input and its rounding before the division."""
        fast_ok = generator is None and observe is None and fmt is None and self._fast_ok(x)
        if fast_ok:
            if self._fast is False:
                self._fast = self._short_path_call()
            if self._fast is not None:
                return self._fast(x)
        if self.scaling == "none":
            q = self.round(x, generator, fmt)
            if observe is not None:
                observe(x, q)
            return q
        if fast_ok and isinstance(self.fmt, FloatFormat) and self.scaling in ("current", "delayed"):
            # compiled passes with the same bits: an amax pass (or the history), then one Q(x·s)/s pass
            x = x.contiguous()
            s = (dispatch.current_scale_f32(x, self.fmt.info.max, self.margin) if self.scaling == "current"
                 else self.scale(x).to(torch.float32))
            if round_short_compiled.supported(self.fmt, self.rounding):
                return dispatch.short_path(x, self.fmt, self.saturate, "scaled", s, rounding=self.rounding,
                                       rand_bits=check_rand_bits(self.rand_bits))
            return dispatch.scaled_round_float(x, self.fmt.kernel_params(torch.float32), self.rounding, self.saturate,
                                           check_rand_bits(self.rand_bits), None, s)
        s = self.scale(x, chan_axis).to(x.dtype)
        xs = x * s
        q = self.round(xs, generator, fmt)
        if observe is not None:
            observe(xs, q)
        return q / s  # not in place: observers may keep q

    def _short_path_key(self) -> tuple | None:
        """The ``round_short_compiled.kernel`` arguments where every float32 tensor takes one compiled short-path graph (a
        float format rounded to nearest or stochastically, unscaled or with current scaling); else None."""
        fmt = self.fmt
        if not (isinstance(fmt, FloatFormat) and round_short_compiled.supported(fmt, self.rounding)
                and self.scaling in ("none", "current")):
            return None
        if self.scaling == "none" and fmt.name in _NATIVE and not self.saturate and self.rounding == "nearest":
            return None  # the native cast is faster
        return (fmt, self.saturate, "plain" if self.scaling == "none" else "current", self.margin, self.rounding,
                check_rand_bits(self.rand_bits))

    def _operands(self, x: torch.Tensor) -> tuple[torch.Tensor, list]:
        """(the fresh flat result, the short-path kernel's arguments for x): out, flat x[, s][, key]."""
        # detached after the reshape, so not a view: a view makes dynamo guard on its base's shape (one graph
        # per parameter shape, then the recompile limit)
        flat = x.reshape(-1).detach()
        out = torch.empty_like(flat)
        args = [out, flat]
        key = self._key
        if key[2] != "plain":  # receives the scale
            args.append(torch.empty((), dtype=torch.float32, device=x.device))
        if key[4] == "stochastic":  # one key per call from the global generator, as the general kernel draws it
            args.append(draw_key().to(x.device))
        return out, args

    def _short_path_call(self) -> Callable[[torch.Tensor], torch.Tensor] | None:
        """This quantizer's short-path kernel with its arguments bound, or None (``_short_path_key``). This is the
        per-call hot path of emulated training: resolved once."""
        self._key = self._short_path_key()
        if self._key is None:
            return None
        fmt, saturate, variant, margin, rounding, rand_bits = self._key
        kernel = round_short_compiled.kernel(fmt, saturate, variant, margin, rounding=rounding, rand_bits=rand_bits)

        def call(x: torch.Tensor) -> torch.Tensor:
            out, args = self._operands(x)
            kernel(*args)
            dispatch.compiled_calls += 1
            return out.view(x.shape)

        return call

    def short_path_ready(self, x: torch.Tensor) -> bool:
        """Whether ``self(x)`` (no generator, observer or format override) runs this quantizer's one-graph short
        path: then ``quantize_pair`` may round x together with another such tensor."""
        if not self._fast_ok(x):
            return False
        if self._fast is False:
            self._fast = self._short_path_call()
        return self._fast is not None


_pair_names = itertools.count()


def _pair_source(ka: Callable, kb: Callable, na: int) -> Callable:
    """``pair(*t)``: ``ka(*t[:na])`` then ``kb(*t[na:])`` (tensors only: the cheapest call to a compiled kernel)."""
    def pair(*t):
        KA(*t[:NA])  # noqa: F821 - bound in the globals of each copy
        KB(*t[NA:])  # noqa: F821
    code = pair.__code__.replace(co_name=f"pair_{next(_pair_names)}")  # a code object of its own: dynamo caches per code
    return types.FunctionType(code, {"KA": ka, "KB": kb, "NA": na, "__builtins__": __builtins__}, code.co_name)


def quantize_pair(qa: ScaledQuantizer, a: torch.Tensor, qb: ScaledQuantizer,
                  b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(qa(a), qb(b))`` in one compiled call (one graph, two outputs: half the per-call cost of two calls, the
    same bits) where both take their one-graph short path (``short_path_ready``) on the same device; else None.
    A stochastic quantizer draws its key in the order of two calls (a's first)."""
    if not (qa.short_path_ready(a) and qb.short_path_ready(b)) or a.device != b.device \
            or a.numel() < 2 or b.numel() < 2:  # sizes 0 and 1 would each compile a graph of their own
        return None
    key = ("scaled_quantizer.pair", qa._key, qb._key)
    oa, ra = qa._operands(a)
    ob, rb = qb._operands(b)
    fn = compiling.cached(key)
    if fn is None:  # len(ra) follows from qa's key
        ka, kb = (round_short_compiled.kernel(k[0], k[1], k[2], k[3], compiled=False, rounding=k[4], rand_bits=k[5])
                  for k in key[1:])
        fn = compiling.compiled(_pair_source(ka, kb, len(ra)), key, what="quantize_pair")
    fn(*ra, *rb)
    dispatch.compiled_calls += 1
    return oa.view(a.shape), ob.view(b.shape)
