"""The one compile switch and the one cache of compiled kernels for the whole package.

Every torch.compile'd kernel of lowp — the float32 rounding kernels (``round_compiled.py``, dispatched by
``dispatch.py``), the format-specialised short paths (``round_short_compiled.py``), the compiled accumulation
(``ops/accumulate_compiled.py``) and K-TanH (``ops/ktanh.py``) — is obtained from ``compiled`` and runs only when
``compile_enabled()``; each of them has an eager reference that gives the same bits (the tests compare them).

* ``compile_enabled()``: ``LOWP_COMPILE`` is not "0", and no user ``TorchFunctionMode`` / ``TorchDispatchMode``
  (``FlopCounterMode``, a profiler's mode, ...) is active: a compiled function called under one raises or traces
  the mode, and the eager kernels give the same bits.
* ``eager_only()``: within it (this thread / context only), ``compile_enabled()`` is false, as under
  ``LOWP_COMPILE=0``: every kernel runs its eager reference (tests compare the two; debugging).
* ``compiled_at_any_size()``: within it, the compiled kernels serve tensors of every size (emulated training, where
  each tensor role is rounded every step and the one-off compilation always pays; tests), not only those of
  ``FAST_MIN_NUMEL`` elements or more (for the accumulation: ``MIN_WORK`` multiply-adds). ``worth_it(n)`` decides.
* ``first_call_seconds()``: the seconds spent so far in the first call of each compiled kernel (compilation,
  mostly): run timings count it as first use wherever it happens.
* ``compiled(fn, key)``: ``fn`` compiled by inductor with ``_OPTIONS`` (below) and dynamic sizes, made on the first
  request (never at import), cached under ``key`` (one entry per key for the process), run under no_grad (its
  inputs never need grad). If compiling or running the compiled twin raises (no C++ compiler, an unsupported
  backend, ...) while ``fn`` itself runs, or if the optional ``probe`` finds the twin differing from ``fn``, it warns
  once (RuntimeWarning) and runs ``fn`` eagerly from then on; ``.ok`` tells which.
* ``graphs_compiled()``: how many graphs lowp has had compiled so far (tests check that shapes do not recompile).

How a kernel is compiled (``_Direct``): per *argument signature* — the nesting of the arguments (tuples, lists,
dicts), each tensor's dtype, device, rank, its sizes 0 and 1 and its dims marked static
(``torch._dynamo.mark_static``) as themselves and its other sizes only as which of them are equal (over all the
tensors), contiguity (else the strides), and the value of every non-tensor argument — ``fn`` is traced once with
symbolic sizes (``make_fx``) and compiled by inductor (``compile_fx``); later calls with that signature call the
compiled graph straight away. That is the graph ``torch.compile`` builds too, less dynamo's frame evaluation, guard
checks and wrappers: about 40 us less a call on this CPU, where a small kernel costs 50-150 us in all. Size
guards that the trace records (``s0 % 16 == 0``, ...) are compiled into one Python expression, checked on every
call of that graph. A function that cannot be traced (a data-dependent branch, ...), a call that breaks a recorded
guard, or a kernel's signatures beyond ``_MAX_SIGNATURES``: ``torch.compile(fn, dynamic=True, fullgraph=True)``
(dynamo, with its own guards) serves it instead.
"""
from __future__ import annotations

import contextlib
import contextvars
import os
import threading
import time
import warnings
from typing import Any, Callable, Hashable

import torch

FAST_MIN_NUMEL = 1 << 16  # elements from which a compiled kernel is used outside ``compiled_at_any_size``

#: inductor options of every lowp kernel. ``cpp.min_chunk_size`` 1: every CPU loop gets its OpenMP parallel scope.
#: Inductor otherwise decides serial vs parallel from the sizes of the first call's tensors (under 512 elements a
#: thread: serial), and the dynamic-shape graph, reused at every later size and kept by the on-disk FX graph cache
#: across processes, then runs 2^26 elements on one thread (measured: e4m3 round to nearest at 2^24 took 2.2x the add
#: bound instead of 1.2x after a first call on 64 elements). (``cpp.dynamic_threads`` also forces the scope but
#: made 2^17..2^19-element calls ~20% slower.)
_OPTIONS = {"cpp.min_chunk_size": 1}

_MAX_SIGNATURES = 16  # traced graphs per kernel; beyond, dynamo's guarded twin serves new signatures


_lock = threading.Lock()
_graphs = 0  # graphs traced and compiled by ``_Direct`` (``graphs_compiled``)
_first_call_s = 0.0  # seconds spent in first calls of compiled kernels (``first_call_seconds``)
_cache: dict[Hashable, "Compiled"] = {}
_FORCED = contextvars.ContextVar("lowp_compiled_forced", default=False)
_EAGER = contextvars.ContextVar("lowp_eager_only", default=False)


def compile_enabled() -> bool:
    """Whether compiled kernels may run now (see the module docstring)."""
    return os.environ.get("LOWP_COMPILE", "1") != "0" and not _EAGER.get() and not _user_mode()


def _user_mode() -> bool:
    """Whether a TorchFunctionMode or TorchDispatchMode is active."""
    return bool(torch._C._is_torch_function_mode_enabled() or torch._C._len_torch_dispatch_stack())


@contextlib.contextmanager
def _set(flag: contextvars.ContextVar):
    token = flag.set(True)
    try:
        yield
    finally:
        flag.reset(token)


def eager_only():
    """Within: the eager reference kernels only (``compile_enabled()`` is false, as under ``LOWP_COMPILE=0``)."""
    return _set(_EAGER)


def compiled_at_any_size():
    """Within: the compiled kernels serve tensors of every size, not only large ones."""
    return _set(_FORCED)


def at_any_size() -> bool:
    """Whether ``compiled_at_any_size`` is active."""
    return _FORCED.get()


def worth_it(size: int, min_size: int = FAST_MIN_NUMEL) -> bool:
    """Whether a compiled kernel should serve work of ``size`` (elements, or multiply-adds against ``min_size``):
    compiling is enabled, and the size reaches ``min_size`` or ``compiled_at_any_size`` is active."""
    return (size >= min_size or _FORCED.get()) and compile_enabled()


def _flatten(obj: Any, leaves: list) -> Any:
    """Append the leaves of ``obj`` (tuples, lists and dicts opened) to ``leaves``; return its structure."""
    if isinstance(obj, (tuple, list)):
        return type(obj), tuple([_flatten(o, leaves) for o in obj])
    if isinstance(obj, dict):
        return dict, tuple(obj), tuple([_flatten(v, leaves) for v in obj.values()])
    leaves.append(obj)
    return None


def _unflatten(struct: Any, leaves: Any) -> Any:
    """``_flatten``'s inverse (``leaves``: an iterator)."""
    if struct is None:
        return next(leaves)
    if struct[0] is dict:
        return {k: _unflatten(s, leaves) for k, s in zip(struct[1], struct[2])}
    return struct[0](_unflatten(s, leaves) for s in struct[1])


def _signature(args: tuple, kwargs: dict) -> tuple[list, tuple | None]:
    """(leaves, signature) of a call: its arguments flattened, and the part of them that a traced graph is
    specialised on (see the module docstring), which starts with their structure; signature None for a leaf that
    is neither a tensor nor a plain constant."""
    if not kwargs and all(isinstance(a, torch.Tensor) for a in args):  # the common call: tensors only
        leaves, sig = list(args), [len(args)]
    else:
        leaves = []
        sig = [_flatten((args, kwargs), leaves)]
    sizes: dict[int, int] = {}
    for a in leaves:
        if isinstance(a, torch.Tensor):
            static = getattr(a, "_dynamo_static_indices", ())  # torch._dynamo.mark_static: dims traced as constants
            shape = tuple(n if n <= 1 or i in static else -1 - sizes.setdefault(n, len(sizes))
                          for i, n in enumerate(a.shape))
            sig.append((a.dtype, a.device, shape, True if a.is_contiguous() else a.stride()))
        elif a is None or isinstance(a, (bool, int, float, str)):
            sig.append((type(a), a))
        else:
            return leaves, None
    return leaves, tuple(sig)


class _Direct:
    """``fn`` traced and compiled by inductor per argument signature, called without dynamo (module docstring)."""

    __slots__ = ("fn", "graphs", "_lock")

    _DYNAMO = object()  # a signature served by dynamo's twin

    def __init__(self, fn: Callable) -> None:
        self.fn, self.graphs, self._lock = fn, {}, threading.Lock()

    def lookup(self, args: tuple, kwargs: dict) -> tuple[list, Any]:
        """The call's flattened arguments, and the compiled graph for its signature (made on first sight) or
        ``_DYNAMO``."""
        leaves, sig = _signature(args, kwargs)
        if sig is None:
            return leaves, self._DYNAMO
        g = self.graphs.get(sig)
        if g is None:
            with self._lock:
                g = self.graphs.get(sig)
                if g is None:
                    g = self.graphs[sig] = (self._compile(leaves, sig[0])
                                            if len(self.graphs) < _MAX_SIGNATURES else self._DYNAMO)
        return leaves, g

    def _compile(self, leaves: list, spec: Any) -> Any:
        global _graphs
        from torch._inductor.compile_fx import compile_fx
        from torch._subclasses.fake_tensor import FakeTensorMode
        from torch.fx.experimental.proxy_tensor import make_fx
        from torch.fx.experimental.symbolic_shapes import SYMPY_INTERP, DimDynamic, ShapeEnv, StatelessSymbolicContext

        fn = self.fn
        slots = [i for i, a in enumerate(leaves) if isinstance(a, torch.Tensor)]
        template = [None if isinstance(a, torch.Tensor) else a for a in leaves]  # holds no tensor of this call

        def flat(*tensors: torch.Tensor) -> Any:  # the tensors as inputs, every other argument a constant
            full = list(template)
            for i, t in zip(slots, tensors):
                full[i] = t
            if isinstance(spec, int):  # tensors only (``_signature``)
                return fn(*full)
            args, kwargs = _unflatten(spec, iter(full))
            return fn(*args, **kwargs)

        try:
            fake_mode = FakeTensorMode(shape_env=ShapeEnv())

            def fake(t: torch.Tensor) -> torch.Tensor:  # sizes symbolic (equal ones alike), marked-static dims not
                static = getattr(t, "_dynamo_static_indices", ())
                dims = [DimDynamic.STATIC if i in static else DimDynamic.DUCK for i in range(t.dim())]
                return fake_mode.from_tensor(t, symbolic_context=StatelessSymbolicContext(dynamic_sizes=dims))

            gm = make_fx(flat, tracing_mode="symbolic")(*(fake(leaves[i]) for i in slots))
            fakes = [n.meta["val"] for n in gm.graph.nodes if n.op == "placeholder"]
            with fake_mode:
                graph = compile_fx(gm, fakes, config_patches=_OPTIONS)
        except Exception:  # noqa: BLE001  (not traceable: dynamo's twin tries, and fails loudly if it must)
            return self._DYNAMO
        guards = None  # the trace's size guards as one compiled Python expression over t0, t1, ...
        shape_env = fake_mode.shape_env
        if shape_env.guards:
            expr = shape_env.produce_guards_expression(fakes)
            guards = compile(expr, "<lowp kernel size guards>", "eval") if expr else None
        _graphs += 1

        def call(leaves: list) -> Any:
            ts = [a for a in leaves if isinstance(a, torch.Tensor)]
            if guards is not None and not eval(guards, SYMPY_INTERP,  # noqa: S307 - torch's own guard expression
                                                {"L": {f"t{i}": t for i, t in enumerate(ts)}}):
                raise _Unforeseen
            return graph(*ts)

        call.graph = graph  # inductor's callable alone (benchmarks/bench_bounds.py times it)
        return call


class _Unforeseen(Exception):
    """A call whose sizes break a guard of the traced graph: dynamo's twin serves it."""


class Compiled:
    """``fn`` and its lazily compiled twin (see the module docstring); call it as ``fn``."""

    __slots__ = ("fn", "what", "ok", "_twin", "_direct", "_called")

    def __init__(self, fn: Callable, what: str, direct: bool = True) -> None:
        self.fn, self.what, self.ok, self._called = fn, what, True, False
        self._direct = _Direct(fn) if direct else None
        self._twin = torch.compile(fn, dynamic=True, fullgraph=True, options=_OPTIONS)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if not self._called:  # the first call compiles: its time goes to first_call_seconds
            global _first_call_s
            self._called = True
            t0 = time.perf_counter()
            try:
                return self._call(*args, **kwargs)
            finally:
                _first_call_s += time.perf_counter() - t0
        return self._call(*args, **kwargs)

    def _call(self, *args: Any, **kwargs: Any) -> Any:
        with torch.no_grad():
            if self.ok:
                try:
                    leaves, graph = self._direct.lookup(args, kwargs) if self._direct else (None, _Direct._DYNAMO)
                    if graph is not _Direct._DYNAMO:
                        try:
                            return graph(leaves)
                        except (_Unforeseen, AssertionError):  # sizes/strides the signature did not capture
                            pass
                    return self._twin(*args, **kwargs)
                except Exception as e:  # noqa: BLE001  (no C++ compiler, unsupported backend, ...)
                    y = self.fn(*args, **kwargs)  # an error of the call itself raises again here, eagerly
                    if not _user_mode():  # a mode the caller did not check for is no failure of the compiler
                        self.fail(f"torch.compile failed ({type(e).__name__}: {e})")
                    return y
            return self.fn(*args, **kwargs)

    def fail(self, why: str) -> None:
        """Run ``fn`` eagerly from now on, with one warning saying why."""
        if self.ok:
            self.ok = False
            warnings.warn(f"lowp: {self.what}: {why}; running it eagerly (same results, slower)", RuntimeWarning,
                          stacklevel=3)


def with_constants(fn: Callable, tag: str, what: str, **consts: Any) -> Compiled:
    """``fn`` compiled (``compiled``) with the keywords ``consts`` (Python ints, floats, bools, strings) written as
    literals into a wrapper of its own, ``{fn}_{tag}`` (``tag``: letters, digits, underscores): dynamo inlines
    ``fn`` with constant arguments, so they are baked into the graph rather than made symbolic, and it caches and
    counts graphs per wrapper. Cached per (fn, tag); ``what`` prefixes the kernel's name in warnings."""
    key = ("with constants", fn.__module__, fn.__qualname__, tag)
    c = _cache.get(key)
    if c is None:
        name = f"{fn.__name__}_{tag}"
        kw = "".join(f"{n}={v!r}, " for n, v in consts.items())
        src = f"def {name}(*args, **kwargs):\n    return fn(*args, {kw}**kwargs)\n"
        ns = {"fn": fn}
        exec(compile(src, f"<lowp kernel {name}>", "exec"), ns)  # noqa: S102 - our own constants only
        c = compiled(ns[name], key, what=f"{what} {name}")
    return c


def materialised(t: torch.Tensor) -> torch.Tensor:
    """``t`` itself, as the max of 16 copies (inside a compiled kernel): inductor then writes it to a buffer once
    instead of recomputing it, in scalar code, inside the loop that reads it (per-row or per-tensor scales)."""
    return t.unsqueeze(0).expand(16, *t.shape).amax(0)


def graphs_compiled() -> int:
    """Graphs compiled so far in this process: lowp's traced graphs plus dynamo's (its twins' recompilations)."""
    from torch._dynamo.utils import counters

    return _graphs + counters["stats"]["unique_graphs"]


def first_call_seconds() -> float:
    """Seconds spent so far (this process) in the first call of each compiled kernel: compilation, mostly."""
    return _first_call_s


def cached(key: Hashable) -> "Compiled | None":
    """The cache's entry for ``key``, None if there is none yet (lets a caller skip building ``fn``)."""
    return _cache.get(key)


def compiled(fn: Callable, key: Hashable = None, *, probe: Callable[[Compiled], bool] | None = None,
             what: str | None = None, direct: bool = True) -> Compiled:
    """The compiled twin of ``fn`` cached under ``key`` (default: ``fn`` itself). ``probe(c)`` (run once, when the
    entry is made) returns whether ``c`` gives the eager bits on inputs built to catch a miscompilation; ``what``
    names the kernel in the warning. ``direct=False``: dynamo's twin only (kernels whose calls are long enough
    that the per-call saving does not matter, but whose arguments take many size patterns, each a graph of its
    own when traced directly: the GEMM accumulation)."""
    c = _cache.get(fn if key is None else key)
    if c is None:
        with _lock:
            key = fn if key is None else key
            c = _cache.get(key)
            if c is None:
                c = Compiled(fn, what or getattr(fn, "__name__", repr(fn)), direct)
                if probe is not None:
                    try:
                        if not probe(c):
                            c.fail("the compiled kernel differs from eager on the probe")
                    except Exception as e:  # noqa: BLE001
                        c.fail(f"its probe raised {type(e).__name__}: {e}")
                _cache[key] = c
    return c
