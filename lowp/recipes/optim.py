"""``LowpOptimizer``: master weights, optimizer state and loss scaling of a Recipe around any torch optimizer
(the training contract in docs/architecture.md).

    opt.zero_grad(); opt.backward(loss)     # (loss · scale).backward()
    opt.step() -> bool                      # unscale; Inf/NaN -> skip (counted); else base step, then
                                            #   w ← Q_master(w)      for every parameter
                                            #   m ← Q_state(m)       for every state tensor shaped like its parameter

Rounding the parameter after the base step is rounding the update into the master format: w ← Q(w + Δw). With a
low master format and no FP32 copy this is Wang et al. 2018 ((1,6,9), stochastic) and Mellempudi et al. 2019 (FP16,
stochastic): a tiny update that nearest rounding would drop survives in expectation. ``recipe.master`` None is an
FP32 master (no rounding); parameters are rounded to the master format once at construction too.
State tensors (momentum_buffer, exp_avg, exp_avg_sq, max_exp_avg_sq, ...) are recognised as floating tensors with
the parameter's shape (so Adam's scalar ``step`` is never rounded). A spec with scaling other than "none" is
applied as per-tensor current amax scaling. Stochastic rounding draws its keys from a private torch.Generator
seeded from torch's global RNG at construction (only when a stochastic spec exists, so the global stream is
untouched otherwise): runs are reproducible under torch.manual_seed.
"""
from __future__ import annotations

from typing import Any, Callable

import torch

from ..formats import get_format
from ..scaled_quantizer import ScaledQuantizer
from ..scaling import make_loss_scaler


def _is_identity(spec: Any) -> bool:
    f = get_format(spec.format)
    return getattr(f, "is_identity_for_float32", False) and spec.scaling == "none"


class LowpOptimizer:
    """Wrap ``base_optimizer`` (e.g. torch.optim.SGD, AdamW) with ``recipe``'s master/optim_state/loss_scaling."""

    def __init__(self, base_optimizer: torch.optim.Optimizer, recipe: Any) -> None:
        if not isinstance(base_optimizer, torch.optim.Optimizer):
            raise TypeError(f"LowpOptimizer wraps a torch.optim.Optimizer, got {type(base_optimizer).__name__}")
        self.optimizer = base_optimizer
        self.recipe = recipe
        self.scaler = make_loss_scaler(getattr(recipe, "loss_scaling", None))
        self.master = self._active(getattr(recipe, "master", None))
        self.optim_state = self._active(getattr(recipe, "optim_state", None))
        # a spec that scales gets per-tensor current scaling here (master weights and state have no amax history)
        self._quantizers = {id(spec): ScaledQuantizer(spec.format, spec.rounding, saturate=spec.saturate,
                                                      rand_bits=spec.rand_bits, margin=spec.margin,
                                                      scaling="none" if spec.scaling == "none" else "current")
                            for spec in (self.master, self.optim_state) if spec is not None}
        self.generator: torch.Generator | None = None
        if any(s is not None and s.rounding == "stochastic" for s in (self.master, self.optim_state)):
            seed = int(torch.randint(0, 2**62, (1,), dtype=torch.int64))
            self.generator = torch.Generator().manual_seed(seed)
        self._unscaled: bool | None = None
        self._round_params()

    @staticmethod
    def _active(spec: Any):
        return None if spec is None or _is_identity(spec) else spec

    # --- rounding ------------------------------------------------------------------------------------------------
    def _q(self, x: torch.Tensor, spec: Any) -> torch.Tensor:
        return self._quantizers[id(spec)](x, generator=self.generator)

    @torch.no_grad()
    def _round_params(self) -> None:
        if self.master is None:
            return
        for group in self.optimizer.param_groups:
            for p in group["params"]:
                if p.is_floating_point():
                    p.copy_(self._q(p, self.master))

    @torch.no_grad()
    def _round_state(self) -> None:
        if self.optim_state is None:
            return
        for p, state in self.optimizer.state.items():
            for key, v in state.items():
                if (isinstance(v, torch.Tensor) and v.is_floating_point() and key != "step"
                        and v.shape == getattr(p, "shape", None)):
                    v.copy_(self._q(v, self.optim_state))

    # --- the training contract -----------------------------------------------------------------------------------
    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)
        self._unscaled = None

    def backward(self, loss: torch.Tensor, **kwargs: Any) -> None:
        """(loss · loss_scale).backward(**kwargs)."""
        self.scaler.scale_loss(loss).backward(**kwargs)

    def _params(self) -> list[torch.Tensor]:
        return [p for g in self.optimizer.param_groups for p in g["params"] if p.grad is not None]

    def unscale_(self) -> bool:
        """Divide the gradients by the loss scale (once per step; call it before gradient clipping); True if all
        gradients are finite."""
        if self._unscaled is None:
            self._unscaled = self.scaler.unscale_(self._params())
        return self._unscaled

    def step(self, closure: Callable[[], Any] | None = None) -> bool:
        """Unscale, skip on Inf/NaN (counted in ``skipped_steps``, the scale backs off), else step the base
        optimizer and round parameters and state. Returns whether the step was taken."""
        finite = self.unscale_()
        self._unscaled = None
        self.scaler.update(not finite)
        if not finite:
            return False
        self.optimizer.step(closure) if closure is not None else self.optimizer.step()
        self._round_params()
        self._round_state()
        return True

    # --- passthrough -----------------------------------------------------------------------------------------
    @property
    def skipped_steps(self) -> int:
        return self.scaler.skipped_steps

    @property
    def loss_scale(self) -> float:
        return self.scaler.scale

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return self.optimizer.param_groups

    @property
    def state(self):
        return self.optimizer.state

    def state_dict(self) -> dict[str, Any]:
        """The base optimizer's state_dict plus ``lowp_loss_scaler`` (torch ignores the extra key)."""
        d = self.optimizer.state_dict()
        d["lowp_loss_scaler"] = self.scaler.state_dict()
        return d

    def load_state_dict(self, d: dict[str, Any]) -> None:
        d = dict(d)
        sc = d.pop("lowp_loss_scaler", None)
        self.optimizer.load_state_dict(d)
        if sc is not None:
            self.scaler.load_state_dict(sc)

    def __repr__(self) -> str:
        return (f"LowpOptimizer({type(self.optimizer).__name__}, recipe={getattr(self.recipe, 'name', '?')!r}, "
                f"master={getattr(self.master, 'format', 'fp32')}, optim_state="
                f"{getattr(self.optim_state, 'format', 'fp32')}, {self.scaler!r})")
