"""User tasks named by a path: ``lowp compare --task package.module:function`` (or ``task = "..."`` in a TOML
config) imports ``package.module`` and calls ``function()``, which returns a :class:`lowp.experiments.tasks.Task`
(the attribute may also be a Task itself). ``path/to/file.py:function`` loads a file instead of a module.

As for other ``module:attribute`` command-line tools (uvicorn, gunicorn), the current directory is put on
``sys.path`` so that a module next to the user's data and code imports without installing it. Every failure is one
ValueError line naming the path: a module that is not found or fails to import, a missing attribute, something
that is not a function, a function that raises or that returns something other than a Task.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from typing import Any, Callable


def _one_line(e: BaseException) -> str:
    msg = str(e).splitlines()[0] if str(e) else ""
    return f"{type(e).__name__}: {msg}".rstrip(": ")


def split_task_path(path: str) -> tuple[str, str]:
    """(module or file, attribute) of ``module:attribute``; ValueError if either part is empty."""
    mod, _, attr = path.rpartition(":")
    if not mod or not attr or not all(p.isidentifier() for p in attr.split(".")):
        raise ValueError(f"bad task path {path!r}: expected package.module:function or path/to/file.py:function")
    return mod, attr


def _is_file(mod: str) -> bool:
    return mod.endswith(".py") or "/" in mod or os.sep in mod


def _import_file(path: str, file: str) -> Any:
    if not os.path.isfile(file):
        raise ValueError(f"task path {path!r}: no file {file!r}")
    name = "lowp_user_task_" + "".join(c if c.isalnum() else "_" for c in os.path.abspath(file))
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, file)
    if spec is None or spec.loader is None:
        raise ValueError(f"task path {path!r}: cannot load {file!r} as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as e:  # noqa: BLE001 - the user's module: report it in one line
        del sys.modules[name]
        raise ValueError(f"task path {path!r}: importing {file!r} failed: {_one_line(e)}") from None
    return module


def _import_module(path: str, mod: str) -> Any:
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
    try:
        return importlib.import_module(mod)
    except ModuleNotFoundError as e:
        missing = e.name or ""
        if mod == missing or mod.startswith(missing + "."):
            raise ValueError(f"task path {path!r}: no module named {missing!r}") from None
        raise ValueError(f"task path {path!r}: importing module {mod!r} failed: {_one_line(e)}") from None
    except Exception as e:  # noqa: BLE001 - the user's module: report it in one line
        raise ValueError(f"task path {path!r}: importing module {mod!r} failed: {_one_line(e)}") from None


def import_task_function(path: str) -> Callable[[], Any] | Any:
    """The function (or Task) that ``path`` names, imported; ValueError naming the path if it cannot be."""
    from .tasks import Task

    mod, attr = split_task_path(path)
    module = _import_file(path, mod) if _is_file(mod) else _import_module(path, mod)
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"task path {path!r}: module {mod!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not (callable(obj) or isinstance(obj, Task)):
        raise ValueError(f"task path {path!r}: {attr!r} is a {type(obj).__name__}, not a function returning a Task")
    return obj


def call_task_function(path: str, fn: Callable[[], Any]) -> Any:
    """``fn()``, checked to be a Task; ValueError naming the path otherwise."""
    from .tasks import Task

    try:
        task = fn()
    except Exception as e:  # noqa: BLE001 - the user's function: report it in one line
        raise ValueError(f"task path {path!r}: calling it failed: {_one_line(e)}") from None
    if not isinstance(task, Task):
        raise ValueError(f"task path {path!r} returned {type(task).__name__}, not a lowp Task "
                         "(lowp.experiments.Task)")
    return task
