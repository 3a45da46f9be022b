"""Dispatch between the eager reference kernel and its torch.compile'd twin.

The compiled path is used for float32 tensors of at least ``FAST_MIN_NUMEL`` elements when ``LOWP_COMPILE`` is not
"0". It is compiled lazily on first use (never at import), on flattened tensors with dynamic shapes and with every
format parameter passed as a tensor, so one graph per (deterministic | stochastic) serves every format, shape and
rank without recompiling. ``compiled_calls`` counts calls that really took the compiled path (tests check it).
"""
from __future__ import annotations

import os
import threading

import torch

from ..rounding import draw_key
from .float_kernel import MODE_CODE, round_float

FAST_MIN_NUMEL = 1 << 16
_lock = threading.Lock()
_compiled = None
compiled_calls = 0


def compile_enabled() -> bool:
    return os.environ.get("LOWP_COMPILE", "1") != "0"


def _get_compiled():
    global _compiled
    with _lock:
        if _compiled is None:
            _compiled = torch.compile(round_float, dynamic=True, fullgraph=True)
    return _compiled


_MODE_T = {name: torch.tensor(code, dtype=torch.int64) for name, code in MODE_CODE.items()}
_BOOL_T = {False: torch.tensor(False), True: torch.tensor(True)}
_RANDK_T = {k: torch.tensor(k, dtype=torch.int64) for k in range(1, 33)}


def round_float_dispatch(x, params, rounding, saturate, rand_bits, generator, out, *, force: str | None = None):
    """Round ``x`` with FloatFormat kernel ``params``; ``force`` = "eager" | "compiled" overrides the choice."""
    global compiled_calls
    kwargs = dict(params, mode=_MODE_T[rounding], saturate=_BOOL_T[saturate])
    if rounding == "stochastic":
        kwargs.update(key=draw_key(generator), rand_k=_RANDK_T[rand_bits])
    use_fast = force == "compiled" or (
        force is None and x.dtype == torch.float32 and x.numel() >= FAST_MIN_NUMEL and compile_enabled()
    )
    flat = x.reshape(-1)
    if use_fast:
        y = _get_compiled()(flat, **kwargs)
        compiled_calls += 1
    else:
        y = round_float(flat, **kwargs)
    y = y.view(x.shape)
    if out is not None:
        out.copy_(y)
        return out
    return y
