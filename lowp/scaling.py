"""Scaling: per-tensor amax scales for FP8 (current and delayed, as NVIDIA Transformer Engine) and loss
scalers (static, dynamic as Micikevicius et al. 2018, "enhanced" as Mellempudi et al. 2019).

Per-tensor scale:  s = (fmt_max / amax) / 2^margin,  x_q = Q(x·s) / s.
The scale is *not* rounded to a power of two by default (Transformer Engine's formula); ``pow2=True`` rounds it
down to one, which makes x·s and q/s exact. amax = 0 or a non-finite amax gives s = 1 (NaN stays NaN in Q);
a finite s that overflows float32 (tiny amax) is clamped to 2^127.

Loss scalers are duck-typed on ``recipes.LossScaling`` (this layer does not import the recipe layer): any object
with its fields (kind, init_scale, growth_factor, backoff_factor, growth_interval, floor, floor_growth,
floor_interval, max_floor) works.
"""
from __future__ import annotations

import collections
import math
from typing import Any, Iterable

import torch

from .formats import Format, get_format

_MAX_SCALE = 2.0**127


def amax_scale(amax: torch.Tensor | float, fmt_max: float, margin: int = 0, *, pow2: bool = False):
    """(fmt_max / amax) / 2^margin, element-wise for a tensor amax (float32 result) or a float for a float amax;
    1 where amax is 0 or not finite. ``pow2`` rounds the scale down to a power of two."""
    if not (isinstance(fmt_max, (int, float)) and math.isfinite(fmt_max) and fmt_max > 0):
        raise ValueError(f"fmt_max must be a positive finite number, got {fmt_max!r}")
    if isinstance(amax, torch.Tensor):
        a = amax.detach().to(torch.float64)
        s = (fmt_max / a) / 2.0**margin
        s = torch.clamp(s, max=_MAX_SCALE)
        if pow2:
            s = torch.exp2(torch.floor(torch.log2(s)))
        ok = torch.isfinite(a) & (a > 0)
        return torch.where(ok, s, torch.ones_like(s)).to(torch.float32)
    a = float(amax)
    if not (math.isfinite(a) and a > 0):
        return 1.0
    s = min((fmt_max / a) / 2.0**margin, _MAX_SCALE)
    return 2.0 ** math.floor(math.log2(s)) if pow2 else s


def _fmt_max(fmt: str | Format) -> float:
    f = get_format(fmt)
    if f.info.max is None:
        raise ValueError(f"per-tensor scaling needs a format with a finite max; {f.name!r} has none")
    return float(f.info.max)


def tensor_amax(x: torch.Tensor) -> torch.Tensor:
    """max |x| as a 0-d float32 tensor (NaN if x has a NaN; 0 for an empty tensor)."""
    if x.numel() == 0:
        return torch.zeros((), dtype=torch.float32, device=x.device)
    return x.detach().abs().amax().to(torch.float32)


def channel_amax(x: torch.Tensor, axis: int) -> torch.Tensor:
    """max |x| over every dim but ``axis`` (kept for broadcasting)."""
    ax = axis % x.dim()
    dims = [d for d in range(x.dim()) if d != ax]
    return x.detach().abs().amax(dim=dims, keepdim=True) if dims else x.detach().abs()


def current_scale(x: torch.Tensor, fmt: str | Format, margin: int = 0, *, pow2: bool = False) -> torch.Tensor:
    """Current scaling: the scale from this tensor's own amax (0-d float32 tensor)."""
    return amax_scale(tensor_amax(x), _fmt_max(fmt), margin, pow2=pow2)


class DelayedScaler:
    """Delayed scaling as Transformer Engine: the scale used at step t comes from the max of the amax history
    *before* t (window of ``history`` steps); the tensor's own amax is recorded after use. The first call, with an
    empty history, uses the tensor's own amax (Transformer Engine starts from scale 1 instead). Non-finite amaxes
    are not recorded (an overflowing step does not poison the window)."""

    def __init__(self, history: int = 16, margin: int = 0, *, pow2: bool = False) -> None:
        if isinstance(history, bool) or not isinstance(history, int) or history < 1:
            raise ValueError(f"history must be an int >= 1, got {history!r}")
        self.history, self.margin, self.pow2 = history, margin, pow2
        self.amax_history: collections.deque[float] = collections.deque(maxlen=history)

    def history_amax(self) -> float | None:
        return max(self.amax_history) if self.amax_history else None

    def scale_for(self, fmt_max: float, fallback_amax: float | torch.Tensor = 0.0) -> torch.Tensor:
        """The scale for the current step from the history (``fallback_amax`` when the history is empty)."""
        h = self.history_amax()
        a = torch.as_tensor(fallback_amax if h is None else h, dtype=torch.float32)
        return amax_scale(a, fmt_max, self.margin, pow2=self.pow2)

    def record(self, amax: float | torch.Tensor) -> None:
        a = float(amax)
        if math.isfinite(a):
            self.amax_history.append(a)

    def scale(self, x: torch.Tensor, fmt: str | Format) -> torch.Tensor:
        """Scale for quantizing ``x`` now (from the history), then record amax(x) into the history."""
        a = tensor_amax(x)
        s = self.scale_for(_fmt_max(fmt), a)
        self.record(a)
        return s

    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history, "margin": self.margin, "amax_history": list(self.amax_history)}

    def load_state_dict(self, d: dict[str, Any]) -> None:
        self.amax_history = collections.deque(d["amax_history"], maxlen=self.history)


# ------------------------------------------------------------------------------------------------ loss scaling

def _grads(items: Iterable[Any]) -> list[torch.Tensor]:
    out = []
    for t in items:
        g = t.grad if isinstance(t, torch.nn.Parameter) or (isinstance(t, torch.Tensor) and t.requires_grad) else t
        if g is None:
            continue
        out.append(g.coalesce().values() if g.is_sparse else g)
    return out


class LossScaler:
    """Loss scaler state machine (kind none/static/dynamic/enhanced, see ``recipes.LossScaling``).

    none      scale 1, never checks or skips.
    static    scale fixed at init_scale; a step with Inf/NaN gradients is skipped (counted).
    dynamic   Inf/NaN: skip the step, scale ×= backoff_factor; after growth_interval consecutive clean steps
              scale ×= growth_factor (torch.amp.GradScaler's rule).
    enhanced  dynamic, and after every update scale = max(scale, floor(t)) with
              floor(t) = min(floor · floor_growth^(t // floor_interval), max_floor), t = steps taken so far
              (skipped ones included). Mellempudi et al. 2019's exact schedule is not in the paper's abstract:
              the defaults of LossScaling are our reconstruction.
    """

    def __init__(self, spec: Any = None) -> None:
        self.kind = "none" if spec is None else spec.kind
        if self.kind not in ("none", "static", "dynamic", "enhanced"):
            raise ValueError(f"unknown loss scaling {self.kind!r}; valid: none, static, dynamic, enhanced")
        self.spec = spec
        self.scale = 1.0 if self.kind == "none" else float(spec.init_scale)
        if not (math.isfinite(self.scale) and self.scale > 0):
            raise ValueError(f"init_scale must be positive and finite, got {self.scale!r}")
        self.steps = 0
        self.skipped_steps = 0
        self.growth_tracker = 0

    def floor_at(self, t: int) -> float:
        """The enhanced scaler's minimum scale after t steps (0 for the other kinds)."""
        if self.kind != "enhanced":
            return 0.0
        s = self.spec
        return min(s.floor * s.floor_growth ** (t // s.floor_interval), s.max_floor)

    def scale_loss(self, loss: torch.Tensor) -> torch.Tensor:
        return loss if self.kind == "none" else loss * self.scale

    @torch.no_grad()
    def unscale_(self, params_or_grads: Iterable[Any]) -> bool:
        """Divide gradients by the scale in place (parameters: their .grad); True if all are finite.
        With kind "none" nothing is checked (plain FP32 semantics) and True is returned."""
        if self.kind == "none":
            return True
        grads = _grads(params_or_grads)
        if self.scale != 1.0:
            inv = 1.0 / self.scale  # in float64: exact for a power-of-two scale
            for g in grads:
                g.mul_(inv)
        return all(bool(torch.isfinite(g).all()) for g in grads)

    def update(self, found_inf: bool) -> None:
        """Advance one step: count it, back off / grow (dynamic kinds), apply the floor (enhanced)."""
        self.steps += 1
        if self.kind == "none":
            return
        if found_inf:
            self.skipped_steps += 1
        if self.kind == "static":
            return
        s = self.spec
        if found_inf:
            self.scale *= s.backoff_factor
            self.growth_tracker = 0
        else:
            self.growth_tracker += 1
            if self.growth_tracker >= s.growth_interval:
                self.scale = min(self.scale * s.growth_factor, _MAX_SCALE)
                self.growth_tracker = 0
        if self.kind == "enhanced":
            self.scale = max(self.scale, self.floor_at(self.steps))

    def state_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "scale": self.scale, "steps": self.steps, "skipped_steps": self.skipped_steps,
                "growth_tracker": self.growth_tracker}

    def load_state_dict(self, d: dict[str, Any]) -> None:
        if d.get("kind", self.kind) != self.kind:
            raise ValueError(f"loss scaler state is for kind {d['kind']!r}, this scaler is {self.kind!r}")
        self.scale, self.steps = float(d["scale"]), int(d["steps"])
        self.skipped_steps, self.growth_tracker = int(d["skipped_steps"]), int(d["growth_tracker"])

    def __repr__(self) -> str:
        return f"LossScaler(kind={self.kind!r}, scale={self.scale:g}, steps={self.steps}, skipped={self.skipped_steps})"


def make_loss_scaler(spec: Any = None) -> LossScaler:
    """A LossScaler from a ``LossScaling`` (or any object with its fields); None means no loss scaling."""
    return LossScaler(spec)
