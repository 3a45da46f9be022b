"""Extension registries that let higher layers (techniques) plug into recipes without the recipe layer importing
them (dependency inversion: the modules named in ``PLUGINS`` register themselves here when imported; ``load_plugins``
imports them by name, once, the first time a lookup needs them, as a package's entry points would be loaded).

- Recipe families: ``register_recipe_family(regex, factory)``; ``get_recipe(name)`` falls back to the first family
  whose regex fully matches the name and calls ``factory(match) -> Recipe`` (e.g. ``pact-w4a4``).
- Recipe modifiers: ``register_modifier(name, fn)``; a recipe name ``BASE+name[:arg]`` (e.g. ``bf16+autosparse:0.8``)
  is ``fn(base_recipe, arg) -> Recipe``.
- Model transforms: ``register_transform(name, fn)``; ``emulate`` applies each entry ``"name[:args]"`` of
  ``recipe.transforms`` as ``fn(model, recipe, args) -> model`` after swapping modules; ``restore`` calls each
  registered ``undo(model)``.
"""
from __future__ import annotations

import importlib
import re
from typing import Callable

RECIPE_FAMILIES: list[tuple[re.Pattern, Callable]] = []
MODIFIERS: dict[str, Callable] = {}
TRANSFORMS: dict[str, Callable] = {}
UNDO: dict[str, Callable] = {}

#: modules of higher layers that register recipe families, modifiers and transforms when imported
PLUGINS = ("lowp.techniques.qat", "lowp.techniques.autosparse")
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


def register_transform(name: str, fn: Callable, undo: Callable | None = None) -> None:
    """``fn(model, recipe, args) -> model``; ``undo(model)`` (optional) removes it again and is called by
    ``lowp.restore`` on every model (so it must be a no-op on a model without the transform)."""
    TRANSFORMS[name] = fn
    if undo is not None:
        UNDO[name] = undo


def split_transform(entry: str) -> tuple[str, str | None]:
    name, _, args = entry.partition(":")
    return name, (args or None)


def get_transform(entry: str) -> tuple[Callable, str | None]:
    name, args = split_transform(entry)
    if name not in TRANSFORMS:
        load_plugins()
    if name not in TRANSFORMS:
        raise ValueError(f"unknown model transform {name!r}; registered: {', '.join(TRANSFORMS) or 'none'}")
    return TRANSFORMS[name], args
