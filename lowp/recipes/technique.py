"""The ``Technique`` protocol: what a training technique (AutoSparse, PACT, K-TanH, a user's own) plugs into.

A technique is a model transform named in ``recipe.transforms`` (``"name[:args]"``) plus the hooks the layers above
call for every technique of a run's recipe, without naming any (``lowp.experiments`` trains, compares and reports
through these hooks only):

- ``transform(model, recipe, args) -> model | None`` — applied by ``lowp.emulate`` after the modules are swapped;
- ``undo(model)`` — called by ``lowp.restore`` for every registered technique (a no-op on a model without it);
- ``on_epoch(model, epoch, epochs)`` — at the start of each training epoch (e.g. AutoSparse's annealing schedule);
- ``epoch_metrics(model, sample) -> Mapping | EpochMetrics`` — history extras at the end of each epoch (e.g. PACT's
  ``pact_alpha``); an :class:`EpochMetrics` also carries a ``detail`` kept for ``run_metrics`` only;
- ``run_metrics(details) -> Mapping`` — the run's ``RunResult.extras`` from the per-epoch details (or history
  extras when a technique gives no detail), e.g. AutoSparse's final sparsity and FLOPs ratios;
- ``columns`` — summary-table columns drawn from ``RunResult.extras`` (:class:`Column`);
- ``report_section(runs) -> ReportSection | None`` — a section of ``report.html``: an HTML fragment and per-layer
  plots of a history key (:class:`LayerPlot`), drawn by the report;
- capabilities: ``supports_data_parallel``.

Subclass :class:`Technique` and override what the technique needs (every hook defaults to nothing), then
``lowp.recipes.extensions.register_technique(instance)``. This module imports nothing of lowp: the hooks' arguments
are the caller's objects (a model, a Recipe, runs with ``.recipe``, ``.history`` and ``.extras``).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Sequence


@dataclasses.dataclass(frozen=True)
class EpochMetrics:
    """What ``Technique.epoch_metrics`` returns when it keeps more than the history shows: ``history`` goes into the
    epoch's history record, ``detail`` (any JSON-free object) only to ``run_metrics``."""

    history: Mapping[str, Any]
    detail: Any = None


@dataclasses.dataclass(frozen=True)
class Column:
    """A summary-table column: ``key`` (unique over techniques), its ``header``, and ``cell(extras) -> str | None``
    from a run's ``RunResult.extras`` (None: the run has no value, shown as '-'; the column is shown when some run
    has one)."""

    key: str
    header: str
    cell: Callable[[Mapping[str, Any]], "str | None"]


@dataclasses.dataclass(frozen=True)
class LayerPlot:
    """A plot of the per-layer dict the history stores under ``key`` (layer -> value, each epoch): one panel per
    recipe (its first seed's run), one line per layer, ``scale`` × value against epoch, written to ``filename``."""

    key: str
    ylabel: str
    filename: str
    alt: str
    scale: float = 1.0


@dataclasses.dataclass(frozen=True)
class ReportSection:
    """A section of the compare report: ``title`` (the heading), ``html`` (the fragment under it, already escaped)
    and plots the report draws. A section whose plots all come out empty is left out."""

    title: str
    html: str = ""
    plots: tuple[LayerPlot, ...] = ()


class Technique:
    """Base class of a registered technique; every hook defaults to doing nothing (see the module docstring)."""

    #: the transform name in ``recipe.transforms`` entries ``"name[:args]"``
    name: str = ""
    #: False: ``lowp compare --nproc P`` (P > 1) refuses a recipe with this technique
    supports_data_parallel: bool = True
    #: summary-table columns (drawn from ``RunResult.extras``)
    columns: tuple[Column, ...] = ()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"

    def transform(self, model: Any, recipe: Any, args: str | None) -> Any:
        raise NotImplementedError(f"technique {self.name!r} has no transform")

    def undo(self, model: Any) -> None:
        """Remove the transform again; must be a no-op on a model without it."""

    def on_epoch(self, model: Any, epoch: int, epochs: int) -> None:
        """Called at the start of epoch ``epoch`` (0-based) of ``epochs``."""

    def epoch_metrics(self, model: Any, sample: Any) -> "Mapping[str, Any] | EpochMetrics":
        """History extras at the end of an epoch; ``sample`` is one training input (batch of 1)."""
        return {}

    def run_metrics(self, details: Sequence[Any]) -> Mapping[str, Any]:
        """``RunResult.extras`` of the run from the epochs' details (see :class:`EpochMetrics`)."""
        return {}

    def report_section(self, runs: Sequence[Any]) -> ReportSection | None:
        """A report section for ``runs`` (every run of the comparison), or None."""
        return None


class FunctionTechnique(Technique):
    """A technique that is only a transform (``register_transform(name, fn, undo)``)."""

    def __init__(self, name: str, fn: Callable, undo: Callable | None = None) -> None:
        self.name, self._fn, self._undo = name, fn, undo

    def transform(self, model: Any, recipe: Any, args: str | None) -> Any:
        return self._fn(model, recipe, args)

    def undo(self, model: Any) -> None:
        if self._undo is not None:
            self._undo(model)
