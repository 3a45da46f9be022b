"""``NumericsCollector``: an observer of ``lowp.ops.observe`` that records numerics statistics (``stats.py``) per
(layer, role) every ``every`` training steps — cheap enough to leave on (overhead measured in
benchmarks/bench_stats.py).

Steps: pass ``model=`` and a training step is counted automatically at every forward call of the model in training
mode (forward pre-hook; forwards in eval mode are neither counted nor recorded), or call ``step()`` yourself after
each optimizer step. Step indices start at 0; roles quantized during step k (forward and backward) are recorded
when k % every == 0.

    with lowp.NumericsCollector(every=10, model=model) as nc:
        train(...)
    print(nc.table()); open("numerics.json", "w").write(nc.to_json())
"""
from __future__ import annotations

import json
import math
from typing import Any

import torch

from .stats import tensor_stats


class Records(list):
    """The list of record dicts; also callable (``records()`` returns a copy) for callers that expect a method."""

    def __call__(self) -> list[dict]:
        return list(self)


class NumericsCollector:
    """Record {layer, role, step, underflow, overflow, subnormal, sqnr_db, amax, n, format} for every quantized
    tensor role of an emulated op on sampled steps (``every``); ``histogram=True`` adds ``exp_hist``."""

    def __init__(self, every: int = 10, *, model: torch.nn.Module | None = None, histogram: bool = False) -> None:
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be a positive int, got {every!r}")
        self.every = every
        self.histogram = histogram
        self.records: Records = Records()
        self._step = 0 if model is None else -1  # with a model, the first training forward starts step 0
        self._model = model
        self._training = True
        self._hook = None
        self._registered = False

    # --- steps -------------------------------------------------------------------------------------------------
    @property
    def current_step(self) -> int:
        return max(self._step, 0)

    def step(self) -> None:
        """Advance to the next training step."""
        self._step += 1

    def _pre_hook(self, module: torch.nn.Module, args: Any) -> None:
        self._training = module.training
        if module.training:
            self._step += 1

    @property
    def sampling(self) -> bool:
        """Whether roles quantized now are recorded."""
        return self._training and self._step >= 0 and self._step % self.every == 0

    # --- the observer ------------------------------------------------------------------------------------------
    def __call__(self, layer: str, role: str, x: torch.Tensor, xq: torch.Tensor, fmt: Any) -> None:
        if not self.sampling:
            return
        rec = {"layer": layer, "role": role, "step": self._step}
        rec.update(tensor_stats(x, xq, fmt, histogram=self.histogram))
        rec["format"] = getattr(fmt, "name", "") or type(fmt).__name__
        self.records.append(rec)

    # --- registration ------------------------------------------------------------------------------------------
    def register(self) -> "NumericsCollector":
        from ..ops import observe  # noqa: PLC0415 (the analysis layer reads the ops layer only when used)

        if not self._registered:
            observe.OBSERVERS.append(self)
            self._registered = True
            if self._model is not None:
                self._hook = self._model.register_forward_pre_hook(self._pre_hook)
        return self

    def unregister(self) -> None:
        from ..ops import observe  # noqa: PLC0415

        if self._registered:
            observe.OBSERVERS.remove(self)
            self._registered = False
        if self._hook is not None:
            self._hook.remove()
            self._hook = None

    def __enter__(self) -> "NumericsCollector":
        return self.register()

    def __exit__(self, *exc: Any) -> None:
        self.unregister()

    # --- output ------------------------------------------------------------------------------------------------
    def to_json(self, **kw: Any) -> str:
        """Records as a JSON list; ±inf SQNR written as the strings "inf" / "-inf" (strict JSON)."""
        def clean(r: dict) -> dict:
            return {k: (("inf" if v > 0 else "-inf") if isinstance(v, float) and math.isinf(v) else
                        None if isinstance(v, float) and math.isnan(v) else
                        {str(a): b for a, b in v.items()} if isinstance(v, dict) else v) for k, v in r.items()}
        return json.dumps([clean(r) for r in self.records], **kw)

    def summary(self) -> list[dict]:
        """One row per (layer, role): mean underflow/overflow/subnormal, min SQNR, max amax over sampled steps."""
        groups: dict[tuple[str, str], list[dict]] = {}
        for r in self.records:
            groups.setdefault((r["layer"], r["role"]), []).append(r)
        rows = []
        for (layer, role), rs in groups.items():
            k = len(rs)
            rows.append({"layer": layer, "role": role, "steps": k, "format": rs[-1].get("format", ""),
                         "underflow": sum(r["underflow"] for r in rs) / k,
                         "overflow": sum(r["overflow"] for r in rs) / k,
                         "subnormal": sum(r["subnormal"] for r in rs) / k,
                         "sqnr_db": min(r["sqnr_db"] for r in rs), "amax": max(r["amax"] for r in rs)})
        return rows

    def table(self) -> str:
        """The per-(layer, role) summary as a fixed-width text table."""
        rows = self.summary()
        cols = ["layer", "role", "format", "steps", "underflow", "overflow", "subnormal", "sqnr_db", "amax"]

        def cell(v: Any) -> str:
            if isinstance(v, float):
                return f"{v:.4g}" if not math.isinf(v) else ("inf" if v > 0 else "-inf")
            return str(v)
        cells = [[cell(r[c]) for c in cols] for r in rows]
        w = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(cols)]
        lines = ["  ".join(c.ljust(x) for c, x in zip(cols, w)).rstrip()]
        lines += ["  ".join(v.ljust(x) for v, x in zip(row, w)).rstrip() for row in cells]
        return "\n".join(lines)


def numerics_collector(model: torch.nn.Module, every: int = 10) -> NumericsCollector:
    """Factory used by ``lowp.experiments.train``: a collector that counts the model's training forwards."""
    return NumericsCollector(every=every, model=model)
