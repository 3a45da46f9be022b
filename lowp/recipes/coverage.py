"""``lowp.coverage(model, *example_inputs, recipe=...)``: which GEMM-like calls a recipe emulates, measured.

One forward (and backward) step runs on the example inputs with the model emulated. Every GEMM-like call lowp saw
becomes a row: name (module path, plus the op for products without a weight operand), op, operand shapes,
forward and backward FLOPs (2·M·N·K per product; backward = one product per operand that needs a gradient), the
format of each role, and whether its forward and backward GEMMs are emulated or why not (exempt, attention kept
in high precision, the recipe leaving an operand in FP32, an outer product).

Independently, a ``TorchDispatchMode`` counts the FLOPs of every aten GEMM that actually ran (torch's own FLOP
formulas, ``torch.utils.flop_counter``, plus CPU flash attention), forward and backward. A forward GEMM issued
outside any call lowp saw is listed as *not captured* with the module that issued it, and the emulated share is
taken against this measured total, so a GEMM lowp missed lowers it rather than vanishing. ``total_flops`` (the rows)
and ``measured_flops`` agree when nothing was missed (format-accumulated recipes, whose GEMMs run as chunked
elementwise sums, measure less: the rows' analytic FLOPs are then the reference).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

from .capture import CaptureState
from .emulate import capture_state, emulate, restore
from .library import get_recipe
from .recipe import Recipe

aten = torch.ops.aten


def _sdpa_cpu_flops(q, k, v, *args, out_val=None, **kwargs) -> int:
    b = math.prod(q.shape[:-2])
    return 2 * b * q.shape[-2] * k.shape[-2] * (q.shape[-1] + v.shape[-1])


def _sdpa_cpu_bwd_flops(grad_out, q, k, v, *args, out_val=None, **kwargs) -> int:
    return 2 * _sdpa_cpu_flops(q, k, v)


_EXTRA = {}
for _name, _fn in (("_scaled_dot_product_flash_attention_for_cpu", _sdpa_cpu_flops),
                   ("_scaled_dot_product_flash_attention_for_cpu_backward", _sdpa_cpu_bwd_flops)):
    if hasattr(aten, _name):
        _EXTRA[getattr(aten, _name)] = _fn


def gemm_flops(func, args, kwargs, out) -> int | None:
    """FLOPs of one aten call if it is a GEMM-like op (None otherwise)."""
    pk = func._overloadpacket
    fn = flop_registry.get(pk) or _EXTRA.get(pk)
    if fn is None:
        return None
    return int(fn(*args, **kwargs, out_val=out))


class _Counter(TorchDispatchMode):
    def __init__(self, state: CaptureState) -> None:
        super().__init__()
        self.state = state
        self.phase = "forward"
        self.measured = {"forward": 0, "backward": 0}
        self.uncaptured: list[tuple[str, str, tuple, int]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        fl = gemm_flops(func, args, kwargs, out)
        if fl is not None:
            self.measured[self.phase] += fl
            if self.phase == "forward" and not self.state.inside():
                shapes = tuple(tuple(a.shape) for a in args if isinstance(a, torch.Tensor))
                self.uncaptured.append((self.state.caller(), str(func._overloadpacket).replace("aten.", ""),
                                        shapes, fl))
        return out


@dataclasses.dataclass(frozen=True)
class CoverageRow:
    name: str
    op: str
    shapes: tuple
    fwd_flops: int
    bwd_flops: int
    formats: dict
    fwd_emulated: bool
    bwd_emulated: bool
    reason: str

    @property
    def emulated_flops(self) -> int:
        return self.fwd_flops * self.fwd_emulated + self.bwd_flops * self.bwd_emulated


@dataclasses.dataclass(frozen=True)
class Coverage:
    """Rows of GEMM-like calls of one step, and the FLOP totals (see the module docstring)."""

    recipe: str
    rows: tuple[CoverageRow, ...]
    measured_forward: int
    measured_backward: int

    @property
    def total_flops(self) -> int:
        return sum(r.fwd_flops + r.bwd_flops for r in self.rows)

    @property
    def measured_flops(self) -> int:
        return self.measured_forward + self.measured_backward

    @property
    def emulated_flops(self) -> int:
        return sum(r.emulated_flops for r in self.rows)

    @property
    def emulated_fraction(self) -> float:
        """Emulated GEMM FLOPs over all GEMM FLOPs of the step (the larger of measured and row totals)."""
        tot = max(self.total_flops, self.measured_flops)
        return 1.0 if tot == 0 else self.emulated_flops / tot

    def to_dict(self) -> dict[str, Any]:
        return {"recipe": self.recipe, "emulated_fraction": self.emulated_fraction,
                "emulated_flops": self.emulated_flops, "total_flops": self.total_flops,
                "measured_flops": self.measured_flops, "measured_forward": self.measured_forward,
                "measured_backward": self.measured_backward,
                "rows": [dict(dataclasses.asdict(r), shapes=[list(s) for s in r.shapes]) for r in self.rows]}

    def table(self, max_rows: int | None = None) -> str:
        """A plain-text table (one line per call) with a summary line."""
        head = f"{'name':44s} {'op':10s} {'fwd GFLOP':>9s} {'bwd GFLOP':>9s}  {'emulated':8s} formats / reason"
        lines = [head, "-" * len(head)]
        rows = self.rows if max_rows is None else self.rows[:max_rows]
        for r in rows:
            em = ("yes" if r.fwd_emulated and (r.bwd_emulated or not r.bwd_flops) else
                  "fwd" if r.fwd_emulated else "no")
            fm = _roles_text(r.formats)
            what = fm if em == "yes" else (r.reason or fm)
            lines.append(f"{r.name[-44:]:44s} {r.op[:10]:10s} {r.fwd_flops / 1e9:9.4f} {r.bwd_flops / 1e9:9.4f}  "
                         f"{em:8s} {what}")
        if max_rows is not None and len(self.rows) > max_rows:
            lines.append(f"... {len(self.rows) - max_rows} more rows")
        lines.append(f"GEMM FLOPs emulated: {100 * self.emulated_fraction:.1f}% of "
                     f"{max(self.total_flops, self.measured_flops) / 1e9:.4f} GFLOP (recipe {self.recipe}; "
                     f"measured by aten: forward {self.measured_forward / 1e9:.4f}, backward "
                     f"{self.measured_backward / 1e9:.4f} GFLOP)")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


_SHORT = {"input": "x", "weight": "w", "output": "y", "grad_output": "dy", "grad_input": "dx", "grad_weight": "dw"}


def _roles_text(formats: dict) -> str:
    """'x,w=e4m3 dy=e5m2': roles with the same format grouped."""
    groups: dict[str, list[str]] = {}
    for role, fmt in formats.items():
        groups.setdefault(fmt, []).append(_SHORT.get(role, role))
    return " ".join(f"{','.join(v)}={k}" for k, v in groups.items())


def _loss_of(out: Any) -> torch.Tensor | None:
    loss = getattr(out, "loss", None)
    if isinstance(loss, torch.Tensor):
        return loss
    logits = getattr(out, "logits", None)
    if isinstance(logits, torch.Tensor):
        out = logits
    if isinstance(out, (tuple, list)):
        out = next((t for t in out if isinstance(t, torch.Tensor) and t.is_floating_point()), None)
    if isinstance(out, dict):
        out = next((t for t in out.values() if isinstance(t, torch.Tensor) and t.is_floating_point()), None)
    if isinstance(out, torch.Tensor) and out.is_floating_point():
        return out.float().sum()
    return None


def coverage(model: nn.Module, *example_inputs: Any, recipe: Recipe | str | None = None, backward: bool = True,
             **example_kwargs: Any) -> Coverage:
    """Run one step of ``model(*example_inputs, **example_kwargs)`` under ``recipe`` (default: the recipe the
    model is emulated with, else ``fp32``) and list every GEMM-like call (see the module docstring).

    The backward pass runs on the output's ``.loss`` if it has one, else on the sum of its (first) floating
    output. The model is returned to its previous state: the previous recipe re-applied (delayed-scaling
    histories restart) or restored, parameter gradients and the global RNG state as they were."""
    prev = capture_state(model)
    rec = get_recipe(recipe) if recipe is not None else (prev.recipe if prev is not None else get_recipe("fp32"))
    if recipe is not None or prev is None:
        emulate(model, rec)
    state = capture_state(model)
    grads = {p: p.grad for p in model.parameters()}
    for p in grads:
        p.grad = None  # backward would accumulate into the user's gradient tensors in place
    counter = _Counter(state)
    state.records = []
    try:
        with torch.random.fork_rng(devices=[]):
            with counter:
                out = model(*example_inputs, **example_kwargs)
                loss = _loss_of(out)
                if backward and loss is not None and loss.requires_grad:
                    counter.phase = "backward"
                    loss.backward()
        records = state.records
    finally:
        state.records = None
        for p, g in grads.items():
            p.grad = g
        if prev is not None and recipe is not None:
            emulate(model, prev.recipe)
        elif prev is None:
            restore(model)
    rows = []
    for r in records:
        f = r.roles
        fwd_ok = r.emulated
        bwd_ok = fwd_ok and "grad_output" in f
        rows.append(CoverageRow(r.name, r.op, r.shapes, r.fwd_flops, r.bwd_flops, dict(f), fwd_ok, bwd_ok,
                                r.reason if not (fwd_ok and bwd_ok) else ""))
    for caller, op, shapes, fl in counter.uncaptured:
        rows.append(CoverageRow(caller or "(model)", op, shapes, fl, 0, {}, False, False,
                                f"not captured: aten.{op} called outside any op lowp intercepts"))
    return Coverage(rec.name, tuple(rows), counter.measured["forward"], counter.measured["backward"])
