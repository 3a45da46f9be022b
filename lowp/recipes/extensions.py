"""Extension registries that let higher layers (techniques) plug into recipes without the recipe layer importing
them (dependency inversion: the package named in ``PLUGINS`` registers its techniques here when imported;
``load_plugins`` imports it by name, once, the first time a lookup needs it, as a package's entry points would be
loaded).

- Recipe families: ``register_recipe_family(regex, factory)``; ``get_recipe(name)`` falls back to the first family
  whose regex fully matches the name and calls ``factory(match) -> Recipe`` (e.g. ``pact-w4a4``).
- Recipe modifiers: ``register_modifier(name, fn)``; a recipe name ``BASE+name[:arg]`` (e.g. ``bf16+autosparse:0.8``)
  is ``fn(base_recipe, arg) -> Recipe``.
- Techniques: ``register_technique(technique)`` (the protocol: ``technique.py``); ``emulate`` applies each entry
  ``"name[:args]"`` of ``recipe.transforms`` as ``technique.transform(model, recipe, args)`` after swapping modules;
  ``restore`` calls every registered ``technique.undo(model)``; training, compare and the report call the hooks of
  the techniques of a run's recipe (``techniques_of``). ``register_transform(name, fn, undo)`` registers a technique
  that is only a transform.
"""
from __future__ import annotations

import importlib
import re
from typing import Any, Callable

from .technique import FunctionTechnique, Technique

RECIPE_FAMILIES: list[tuple[re.Pattern, Callable]] = []
MODIFIERS: dict[str, Callable] = {}
TECHNIQUES: dict[str, Technique] = {}

#: packages of higher layers that register recipe families, modifiers and techniques when imported
PLUGINS = ("lowp.techniques",)
_plugins_loaded = False


def load_plugins() -> None:
    """Import every module of ``PLUGINS``, so that their registrations are in place (the flag is set only once all
    are imported: a second thread meanwhile imports them too, and Python's import lock makes it wait)."""
    global _plugins_loaded
    if not _plugins_loaded:
        for name in PLUGINS:
            importlib.import_module(name)
        _plugins_loaded = True


def register_recipe_family(pattern: str, factory: Callable, *, description: str = "") -> None:
    RECIPE_FAMILIES.append((re.compile(pattern), factory))
    factory.__lowp_description__ = description or pattern  # type: ignore[attr-defined]


def register_modifier(name: str, fn: Callable) -> None:
    MODIFIERS[name] = fn


def register_technique(technique: Technique) -> Technique:
    """Register ``technique`` under ``technique.name`` (a later registration of the name replaces it); returns it."""
    if not isinstance(technique, Technique):
        raise TypeError(f"register_technique needs a lowp Technique, got {type(technique).__name__}")
    name = technique.name
    if not isinstance(name, str) or not name or ":" in name or "+" in name:
        raise ValueError(f"technique name must be a non-empty string without ':' or '+', got {name!r}")
    TECHNIQUES[name] = technique
    return technique


def unregister_technique(name: str) -> None:
    """Remove a registered technique (tests; unknown names are an error)."""
    if name not in TECHNIQUES:
        raise ValueError(f"unknown technique {name!r}; registered: {', '.join(TECHNIQUES) or 'none'}")
    del TECHNIQUES[name]


def register_transform(name: str, fn: Callable, undo: Callable | None = None) -> Technique:
    """A technique that is only a transform: ``fn(model, recipe, args) -> model``; ``undo(model)`` (optional)
    removes it again and is called by ``lowp.restore`` on every model (so it must be a no-op on a model without
    the transform)."""
    return register_technique(FunctionTechnique(name, fn, undo))


def split_transform(entry: str) -> tuple[str, str | None]:
    name, _, args = entry.partition(":")
    return name, (args or None)


def get_technique(entry: str) -> tuple[Technique, str | None]:
    """The registered technique of a transform entry ``"name[:args]"`` and its args; unknown names raise."""
    name, args = split_transform(entry)
    if name not in TECHNIQUES:
        load_plugins()
    if name not in TECHNIQUES:
        raise ValueError(f"unknown model transform {name!r}; registered: {', '.join(TECHNIQUES) or 'none'}")
    return TECHNIQUES[name], args


def techniques_of(recipe: Any) -> list[Technique]:
    """The techniques of ``recipe.transforms``, in order, each once (None: no techniques)."""
    out: dict[str, Technique] = {}
    for entry in () if recipe is None else recipe.transforms:
        t, _ = get_technique(entry)
        out.setdefault(t.name, t)
    return list(out.values())


def registered_techniques() -> list[Technique]:
    """Every registered technique (the plugins loaded first), in registration order."""
    load_plugins()
    return list(TECHNIQUES.values())
