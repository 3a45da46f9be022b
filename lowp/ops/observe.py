"""Hook for numerics statistics of emulated ops (``lowp.analysis.collector`` records them).

Every emulated op calls ``notify(layer_name, role, x, xq, fmt)`` right after it quantizes a tensor role — but only
when at least one observer is registered (``if OBSERVERS:`` is the whole cost otherwise). ``x`` and ``xq`` are the
tensor before and after rounding *in the format's own units*: for a role with per-tensor / per-channel scaling
they are ``x·s`` and ``Q(x·s)`` (the op then returns ``Q(x·s)/s``), so ``xq`` holds values of ``fmt`` exactly and
flush-to-zero (``xq == 0 & x != 0``), saturation (``|xq| == fmt.max``), SQNR and exponent histograms can be read
off directly. ``role`` is one of ``input, weight, output, grad_output, grad_input, grad_weight`` (``nongemm`` for
rounded norm/softmax outputs). Observers must not modify the tensors; they run inside forward/backward, under
``torch.no_grad``.

    from lowp.ops import observe
    with observe.observing(lambda name, role, x, xq, fmt: print(name, role, (xq == 0).float().mean())):
        loss = model(x).sum(); loss.backward()
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator

import torch

Observer = Callable[[str, str, torch.Tensor, torch.Tensor, Any], None]

#: Registered observers, called in order. Append/remove directly or use ``observing``.
OBSERVERS: list[Observer] = []


def notify(layer_name: str, role: str, x: torch.Tensor, xq: torch.Tensor, fmt: Any) -> None:
    """Call every registered observer with one quantized role (see module docstring)."""
    for obs in tuple(OBSERVERS):
        obs(layer_name, role, x, xq, fmt)


@contextlib.contextmanager
def observing(observer: Observer) -> Iterator[Observer]:
    """Register ``observer`` for the duration of a ``with`` block."""
    OBSERVERS.append(observer)
    try:
        yield observer
    finally:
        OBSERVERS.remove(observer)
