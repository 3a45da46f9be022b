"""Dispatch between the eager reference kernels and their compiled twins (``compiling.py``).

The compiled paths are used for float32 tensors of at least ``FAST_MIN_NUMEL`` elements when ``LOWP_COMPILE`` is
not "0": every FloatFormat (``round_compiled.round_f32``, int32 arithmetic), MX with a float element along the last
axis of a tensor whose last dim is a multiple of the block (floor scales with nearest or stochastic rounding:
``mx_compiled.py``, the element's constants baked in; otherwise ``mx_scale`` then ``mx_round_into``), and per-tensor
IntFormat (``int_scale`` then ``int_round_into``).
They give the same bits as the eager references (tests check it). They are compiled lazily on first use (never at
import), on flattened tensors with dynamic shapes and with every format parameter passed as a 0-d tensor, so one
graph per (kernel, deterministic | stochastic) serves every format, shape and rank without recompiling; each writes
straight into its output (``out=`` or a fresh tensor). ``compiled_calls`` counts calls that took a compiled path.
The switch (``compile_enabled``), the size rule (``compiled_at_any_size``) and the cache of compiled kernels are the
package's one set, in ``compiling.py``.
"""
from __future__ import annotations

import types

import torch

from ..rounding import draw_key
from . import round_compiled, round_short_compiled
from .compiling import cached, compiled, worth_it
from .round_reference import MODE_CODE, round_float

MAX_NUMEL = 1 << 31  # the compiled kernels index elements (and their random bits) in int32
compiled_calls = 0

_FNS = {"generic": round_float, "float": round_compiled.float_into, "mx_scale": round_compiled.mx_scale,
        "mx": round_compiled.mx_round_into, "int_scale": round_compiled.int_scale, "int": round_compiled.int_round_into,
        "amax_scale": round_compiled.amax_scale_f32, "scaled_float": round_compiled.scaled_float_into}


def _get_compiled(which: str = "generic", mode: str | None = None):
    """The compiled kernel ``which``; with ``mode`` (a rounding mode name), its graph for that mode alone."""
    key = ("dispatch", which, mode)
    return cached(key) or compiled(_FNS[which] if mode is None else _with_mode(_FNS[which], mode), key)


def _with_mode(fn, mode: str):
    """A copy of kernel ``fn`` whose keyword ``mode`` defaults to ``mode``'s code, with a code object of its own:
    dynamo caches graphs (and counts recompilations) per code object, so each mode gets its own."""
    code = fn.__code__.replace(co_name=f"{fn.__name__}_{mode}")
    new = types.FunctionType(code, fn.__globals__, code.co_name, fn.__defaults__, fn.__closure__)
    new.__kwdefaults__ = {**(fn.__kwdefaults__ or {}), "mode": MODE_CODE[mode]}
    return new


_MODE_T = {name: torch.tensor(code, dtype=torch.int64) for name, code in MODE_CODE.items()}
_BOOL_T = {False: torch.tensor(False), True: torch.tensor(True)}
_RANDK_T = {k: torch.tensor(k, dtype=torch.int64) for k in range(1, 33)}
_P32: dict[int, tuple[dict, dict]] = {}
_ON: dict[tuple[int, torch.device], tuple[torch.Tensor, torch.Tensor]] = {}


def _on(v, device: torch.device):
    """``v`` moved to ``device`` when it is a tensor elsewhere (the CPU parameter constants above, a key drawn on
    the CPU): a compiled CUDA graph then holds no CPU op, and the eager kernel no CPU operand that is not 0-d.
    Copies of 0-d constants are cached (kept alive with their source), so a CUDA call pays no host copy for them."""
    if not isinstance(v, torch.Tensor) or v.device == device:
        return v
    if v.dim():
        return v.to(device)
    hit = _ON.get((id(v), device))
    if hit is None or hit[0] is not v:
        if len(_ON) > 4096:
            _ON.clear()
        hit = _ON[(id(v), device)] = (v, v.to(device))
    return hit[1]


def _params32(params: dict) -> dict:
    """The FloatFormat kernel parameters as int32 / float32 0-d tensors (cached per params dict)."""
    hit = _P32.get(id(params))
    if hit is None or hit[0] is not params:
        p = {k: (v.to(torch.int32) if v.dtype == torch.int64 else v.to(torch.float32)) for k, v in params.items()}
        hit = _P32[id(params)] = (params, p)
    return hit[1]


def use_compiled(x: torch.Tensor) -> bool:
    """Whether float32 ``x`` takes a compiled kernel (``compiling.worth_it``; fewer than ``MAX_NUMEL`` elements)."""
    return x.dtype == torch.float32 and x.numel() < MAX_NUMEL and worth_it(x.numel())


def _flat(x: torch.Tensor, row: int | None = None) -> torch.Tensor:
    """x detached and viewed flat, or as rows of ``row`` elements (a static dim: one graph per row length)."""
    # detached after the reshape: not a view, so dynamo does not guard on (and recompile for) the base's shape
    v = x.reshape(-1 if row is None else (-1, row)).detach()
    if row is not None:
        torch._dynamo.mark_static(v, 1)
    return v


def _run_into(which: str, mode: str, x: torch.Tensor, out: torch.Tensor | None, *args, row: int | None = None,
              **kwargs) -> torch.Tensor:
    """Run compiled kernel ``which`` on x flattened (or in rows of ``row``), writing into out (or a fresh tensor);
    returns the x-shaped result."""
    global compiled_calls
    flat, target, direct = _operands(x, out, row)
    args, kwargs = [_on(a, flat.device) for a in args], {k: _on(v, flat.device) for k, v in kwargs.items()}
    _get_compiled(which, mode)(target, flat, *args, **kwargs)
    compiled_calls += 1
    return _result(x, out, target, direct)


def _operands(x: torch.Tensor, out: torch.Tensor | None, row: int | None = None):
    """(flat x, flat target, whether the target is ``out`` itself): a compiled kernel writes straight into a
    contiguous ``out``, else into a fresh tensor."""
    flat = _flat(x, row)
    direct = out is not None and out.is_contiguous()
    target = _flat(out, row) if direct else torch.empty_like(flat)
    if row is not None and not direct:
        torch._dynamo.mark_static(target, 1)
    return flat, target, direct


def _result(x: torch.Tensor, out: torch.Tensor | None, target: torch.Tensor, direct: bool) -> torch.Tensor:
    if out is None:
        return target.view(x.shape)
    if not direct:
        out.copy_(target.view(x.shape))
    return out


def _stochastic_kwargs(rounding, rand_bits, generator) -> dict:
    if rounding != "stochastic":
        return {}
    return {"rand_k": _RANDK_T[rand_bits], "key": draw_key(generator)}


def float_dispatch(x, fmt, rounding, saturate, rand_bits, generator, out, *, force: str | None = None):
    """Round ``x`` onto FloatFormat ``fmt``: the format's compiled short path where one exists (float32, nearest or
    stochastic), else ``round_float_dispatch``; ``force`` as there."""
    if (x.dtype == torch.float32 and round_short_compiled.supported(fmt, rounding)
            and ((force == "compiled" and x.numel() < MAX_NUMEL) or (force is None and use_compiled(x)))):
        return short_path(x, fmt, saturate, "plain", out=out, rounding=rounding, rand_bits=rand_bits,
                          generator=generator)
    return round_float_dispatch(x, fmt.kernel_params(x.dtype), rounding, saturate, rand_bits, generator, out,
                                force=force)


def short_path(x, fmt, saturate: bool, variant: str, s: torch.Tensor | None = None, margin: int = 0,
               out: torch.Tensor | None = None, rounding: str = "nearest", rand_bits: int = 32,
               generator: torch.Generator | None = None) -> torch.Tensor:
    """Run the compiled short-path kernel (``round_short_compiled.py``) of ``fmt`` on float32 x: ``plain`` Q(x),
    ``scaled`` Q(x·s)/s with 0-d float32 ``s``, ``current`` the same with s = amax scale of x computed in the graph
    (then ``s``, if given, receives it). Stochastic rounding draws one key from ``generator``, as the general kernel."""
    global compiled_calls
    flat, target, direct = _operands(x, out)
    k = round_short_compiled.kernel(fmt, bool(saturate), variant, margin, rounding=rounding, rand_bits=rand_bits)
    args = [target, flat]
    if variant != "plain":
        args.append(s if s is not None else torch.empty((), dtype=torch.float32, device=x.device))
    if rounding == "stochastic":
        args.append(_on(draw_key(generator), x.device))
    k(*args)
    compiled_calls += 1
    return _result(x, out, target, direct)


def round_float_dispatch(x, params, rounding, saturate, rand_bits, generator, out, *, force: str | None = None):
    """Round ``x`` with FloatFormat kernel ``params``; ``force`` = "eager" | "compiled" overrides the choice."""
    global compiled_calls
    use_fast = (force == "compiled" and x.numel() < MAX_NUMEL) or (force is None and use_compiled(x))
    if use_fast and x.dtype == torch.float32:
        p = _params32(params)
        return _run_into("float", rounding, x, out, p["man"], p["emin"], p["maxval"], p["over_inf"],
                         _BOOL_T[saturate], p["subnormals"], p["no_negzero"], p["minnorm"],
                         **_stochastic_kwargs(rounding, rand_bits, generator))
    kwargs = dict(params, mode=_MODE_T[rounding], saturate=_BOOL_T[saturate])
    kwargs.update(_stochastic_kwargs(rounding, rand_bits, generator))
    flat = _flat(x)
    kwargs = {k: _on(v, x.device) for k, v in kwargs.items()}
    if use_fast:
        y = _get_compiled("generic")(flat, **kwargs)
        compiled_calls += 1
    else:
        y = round_float(flat, **kwargs)
    y = y.view(x.shape)
    if out is not None:
        out.copy_(y)
        return out
    return y


def current_scale_f32(x: torch.Tensor, fmt_max: float, margin: int) -> torch.Tensor:
    """``scaling.current_scale`` for a float32 tensor in one compiled pass (0-d float32 scale)."""
    global compiled_calls
    compiled_calls += 1
    return _get_compiled("amax_scale")(_flat(x), torch.tensor(float(fmt_max), dtype=torch.float64, device=x.device),
                                       torch.tensor(2.0**margin, dtype=torch.float64, device=x.device))


def scaled_round_float(x, params, rounding, saturate, rand_bits, generator, s):
    """Q(x·s) / s for float32 x and a 0-d float32 scale s, fused into one compiled pass (same bits as the three
    eager steps)."""
    p = _params32(params)
    return _run_into("scaled_float", rounding, x, None, s, p["man"], p["emin"], p["maxval"], p["over_inf"],
                     _BOOL_T[saturate], p["subnormals"], p["no_negzero"], p["minnorm"],
                     **_stochastic_kwargs(rounding, rand_bits, generator))


def mx_fast_ok(x: torch.Tensor, fmt) -> bool:
    """MX fast path: float element, float32 input, blocks along the last (memory-contiguous) axis, no padding."""
    from .float import FloatFormat

    return (isinstance(fmt.element, FloatFormat) and use_compiled(x) and x.dim() >= 1
            and fmt.axis % x.dim() == x.dim() - 1 and x.shape[-1] % fmt.block == 0)


def mx_dispatch(x, fmt, rounding, rand_bits, generator, out):
    from . import mx_compiled

    if mx_compiled.supported(fmt, rounding):  # floor scales, nearest or stochastic: the two-pass kernels
        return mx_compiled.quantize(x, fmt, rounding, rand_bits, generator, out)
    el = fmt.element
    p = _params32(el.kernel_params(torch.float32))
    # one graph per block size (a symbolic block length costs ~3x); the shared exponents first, in their own graph
    if fmt.scale_rounding == "floor":
        e = _get_compiled("mx_scale")(_flat(x, fmt.block), torch.tensor(el.emax, dtype=torch.int32, device=x.device))
    else:  # the other E8M0 roundings: exponents by the eager reference (a small per-block tensor)
        e = fmt.shared_exponent(_flat(x, fmt.block)).to(torch.int32)
    return _run_into("mx", rounding, x, out, e, p["man"], p["emin"], p["maxval"], p["no_negzero"],
                     row=fmt.block, **_stochastic_kwargs(rounding, rand_bits, generator))


def int_dispatch(x, fmt, rounding, rand_bits, generator, out):
    s = _get_compiled("int_scale")(_flat(x), torch.tensor(fmt.qmax, dtype=torch.int64, device=x.device))
    return _run_into("int", rounding, x, out, s, torch.tensor(fmt.qmax, dtype=torch.int64, device=x.device),
                     **_stochastic_kwargs(rounding, rand_bits, generator))
