"""Configuration of a comparison (``lowp compare --config exp.toml``) and its TOML round trip.

    task = "mnist1d-cnn"   # a registered task, or "package.module:function" returning a Task
    epochs = 10            # optional: the task's default
    seed = 0
    lr = 0.05              # optional: the task's default
    batch_size = 64        # optional: the task's default
    jobs = 1
    out = "lowp-compare"
    recipes = ["fp32", "bf16"]            # names, or tables:
    # [[recipes]]
    # name = "fp8-hybrid-m1"
    # base = "fp8-hybrid"
    # overrides = {input = {margin = 1}}

A recipe table's ``overrides`` go to ``Recipe.replace`` (a table for a tensor-spec field updates that spec).
``CompareConfig.to_toml()`` writes a file that ``load_config`` reads back to an equal config; ``lowp compare``
writes the effective config to ``DIR/config.toml`` so a run can be repeated exactly.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any

try:
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

DEFAULT_TASK = "mnist1d-cnn"
DEFAULT_RECIPES = ("fp32", "bf16", "fp8-hybrid", "fp8-e5m2", "fp8-e5m2-noscale", "fp8-ibm")
DEFAULT_OUT = "lowp-compare"
DEFAULT_SEEDS = (0, 1, 2)  # paired seeds: enough for a t interval of the differences to FP32 (see stats.py)
MAX_SEEDS = 100


@dataclasses.dataclass(frozen=True)
class RecipeEntry:
    """One recipe of a comparison: ``name`` (the label, and the recipe if ``base`` is None), an optional named
    ``base`` recipe, and ``overrides`` for ``Recipe.replace``."""

    name: str
    base: str | None = None
    overrides: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError(f"a recipe entry needs a non-empty name, got {self.name!r}")
        from ..recipes.recipe import check_recipe_name

        check_recipe_name(self.name)  # no control characters (a newline would break the table)
        if self.base is not None and not isinstance(self.base, str):
            raise ValueError(f"recipe {self.name!r}: base must be a recipe name, got {self.base!r}")
        if not isinstance(self.overrides, dict):
            raise ValueError(f"recipe {self.name!r}: overrides must be a table, got {self.overrides!r}")

    def resolve(self):
        """The Recipe: base (or name) from the library, overrides applied, renamed to ``name`` when derived."""
        from .train import resolve_recipe

        r = resolve_recipe(self.base if self.base is not None else self.name)
        if self.overrides:
            r = r.replace(**self.overrides)
        if self.base is not None or self.overrides:
            r = r.replace(name=self.name)
        return r

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name}
        if self.base is not None:
            d["base"] = self.base
        if self.overrides:
            d["overrides"] = self.overrides
        return d

    @classmethod
    def from_any(cls, v: Any) -> "RecipeEntry":
        if isinstance(v, RecipeEntry):
            return v
        if isinstance(v, str):
            return cls(v.strip())
        if isinstance(v, dict):
            bad = set(v) - {"name", "base", "overrides"}
            if bad:
                raise ValueError(f"unknown key(s) {sorted(bad)} in recipe entry {v!r}; valid: name, base, overrides")
            if "name" not in v:
                raise ValueError(f"recipe entry {v!r} has no name")
            return cls(v["name"], v.get("base"), dict(v.get("overrides") or {}))
        raise ValueError(f"a recipe entry is a name or a table, got {v!r}")


MAX_SEED = 2**63 - 1  # torch.manual_seed and torch.Generator take a 64-bit seed


def _pos_int(name: str, v: Any, minimum: int = 1, maximum: int = 2**31 - 1) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not minimum <= v <= maximum:
        raise ValueError(f"{name} must be an integer in {minimum}..{maximum}, got {v!r}")
    return v


@dataclasses.dataclass(frozen=True)
class CompareConfig:
    """Everything that defines a comparison. ``epochs``, ``lr`` and ``batch_size`` None mean the task's default.
    ``seeds``: every recipe trains once per seed (a seed sets the initial weights and the data order, the same for
    every recipe); a legacy ``seed = N`` key means ``seeds = [N]``. ``numerics``: per-layer numerics statistics
    every ``numerics_every`` steps (None: chosen from the run's length, see ``compare.numerics_interval``)."""

    task: str = DEFAULT_TASK
    recipes: tuple[RecipeEntry, ...] = tuple(RecipeEntry(r) for r in DEFAULT_RECIPES)
    epochs: int | None = None
    seeds: tuple[int, ...] = DEFAULT_SEEDS
    lr: float | None = None
    batch_size: int | None = None
    jobs: int = 1
    out: str = DEFAULT_OUT
    numerics_every: int | None = None
    nproc: int = 1
    grad_hook: str = "none"
    numerics: bool = True

    @property
    def seed(self) -> int:
        """The first seed."""
        return self.seeds[0]

    def __post_init__(self) -> None:
        if not isinstance(self.task, str) or not self.task:
            raise ValueError(f"task must be a task name, got {self.task!r}")
        recipes = tuple(RecipeEntry.from_any(r) for r in self.recipes)
        if not recipes:
            raise ValueError("no recipes given")
        names = [r.name for r in recipes]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"duplicate recipe name(s): {', '.join(dup)}")
        object.__setattr__(self, "recipes", recipes)
        if self.epochs is not None:
            _pos_int("epochs", self.epochs)
        seeds = self.seeds
        if isinstance(seeds, (str, bytes)) or not isinstance(seeds, (list, tuple)):
            raise ValueError(f"seeds must be a list of integers, got {seeds!r}")
        seeds = tuple(_pos_int("seed", s, 0, MAX_SEED) for s in seeds)
        if not seeds:
            raise ValueError("seeds must name at least one seed")
        if len(seeds) > MAX_SEEDS:
            raise ValueError(f"at most {MAX_SEEDS} seeds, got {len(seeds)}")
        dup = sorted({x for x in seeds if seeds.count(x) > 1})
        if dup:
            raise ValueError(f"duplicate seed(s): {', '.join(map(str, dup))}")
        object.__setattr__(self, "seeds", seeds)
        if not isinstance(self.numerics, bool):
            raise ValueError(f"numerics must be true or false, got {self.numerics!r}")
        if self.lr is not None and (isinstance(self.lr, bool) or not isinstance(self.lr, (int, float))
                                    or not math.isfinite(self.lr) or self.lr <= 0):
            raise ValueError(f"lr must be a positive number, got {self.lr!r}")
        if self.batch_size is not None:
            _pos_int("batch_size", self.batch_size)
        _pos_int("jobs", self.jobs)
        if self.numerics_every is not None:
            _pos_int("numerics_every", self.numerics_every)
        if not isinstance(self.out, str) or not self.out:
            raise ValueError(f"out must be a directory path, got {self.out!r}")
        _pos_int("nproc", self.nproc)
        if self.batch_size is not None and self.nproc > self.batch_size:
            raise ValueError(f"batch_size {self.batch_size} is smaller than nproc {self.nproc}: every process needs at "
                             "least one sample of each batch")
        from ..distributed.hooks import parse_hook

        parse_hook(self.grad_hook)  # unknown hook names raise ValueError listing the valid ones
        if self.grad_hook != "none" and self.nproc < 2:
            raise ValueError(f"grad_hook {self.grad_hook!r} needs nproc >= 2 (data-parallel training)")

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["recipes"] = [r.to_dict() for r in self.recipes]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "CompareConfig":
        valid = {f.name for f in dataclasses.fields(cls)} | {"seed"}
        bad = set(d) - valid
        if bad:
            raise ValueError(f"unknown config key(s) {sorted(bad)}; valid: {', '.join(sorted(valid))}")
        d = dict(d)
        if "seed" in d:
            if "seeds" in d:
                raise ValueError("give either seed or seeds, not both")
            d["seeds"] = [d.pop("seed")]
        if "recipes" in d:
            r = d["recipes"]
            if isinstance(r, str):
                r = [x for x in r.split(",") if x.strip()]
            if not isinstance(r, (list, tuple)):
                raise ValueError(f"recipes must be a list, got {r!r}")
            d["recipes"] = tuple(RecipeEntry.from_any(x) for x in r)
        return cls(**d)

    def replace(self, **kw: Any) -> "CompareConfig":
        """A copy with the given (non-None) fields replaced."""
        kw = {k: v for k, v in kw.items() if v is not None}
        if "seed" in kw:
            if "seeds" in kw:
                raise ValueError("give either seed or seeds, not both")
            kw["seeds"] = [kw.pop("seed")]
        return CompareConfig.from_dict({**self.to_dict(), **kw})

    def to_toml(self) -> str:
        """TOML text that ``load_config``/``parse_config`` read back to an equal config (None fields omitted)."""
        lines = ["# lowp compare configuration (written by lowp; rerun with: lowp compare --config this-file)"]
        d = self.to_dict()
        for k, v in d.items():
            if k != "recipes" and v is not None:
                lines.append(f"{k} = {_toml_value(v)}")
        for r in d["recipes"]:
            lines += ["", "[[recipes]]"] + [f"{k} = {_toml_value(v)}" for k, v in r.items()]
        return "\n".join(lines) + "\n"


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # JSON string escapes are valid TOML basic-string escapes
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{json.dumps(str(k))} = {_toml_value(x)}" for k, x in v.items()) + "}"
    if v is None:
        raise ValueError("TOML has no null value")
    raise ValueError(f"cannot write {type(v).__name__} value {v!r} as TOML")


def parse_config(text: str, source: str = "<config>") -> CompareConfig:
    """A CompareConfig from TOML text; malformed TOML or bad values raise a one-line ValueError naming ``source``."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"malformed config {source}: {e}") from None
    except RecursionError:
        raise ValueError(f"malformed config {source}: nested too deeply") from None
    try:
        return CompareConfig.from_dict(data)
    except (TypeError, ValueError) as e:
        raise ValueError(f"bad config {source}: {str(e).splitlines()[0]}") from None
    except RecursionError:
        raise ValueError(f"bad config {source}: a value is nested too deeply") from None


def load_config(path: str | os.PathLike) -> CompareConfig:
    """Read a TOML config file (see the module docstring)."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise ValueError(f"cannot read config {path!r}: {e.strerror or e}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"malformed config {path}: not UTF-8 text") from None
    return parse_config(text, path)
