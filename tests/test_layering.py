"""The layering rule of docs/architecture.md: a lower layer never imports a higher one.

Every module under ``lowp/`` is parsed with ``ast`` and every ``import`` / ``from ... import`` node anywhere in its
tree is checked, so imports inside functions (lazy imports) count the same as those at the top. A string constant
naming a ``lowp.`` module (what ``importlib.import_module`` would load) counts as an import too.

Layers, bottom to top (docs/architecture.md; the order of the project spec's section 2, with rounding below formats
because the float kernel and the scaled formats draw their random bits from ``lowp.rounding``):

  0  lowp.rounding                         rounding modes, counter-based random bits
  1  lowp.formats                          number formats
  2  lowp.quantize, lowp.scaling,         public quantize/STE; amax scaling, loss scalers; the one scaled
     lowp.scaled_quantizer                 quantizer Q(x·s)/s
  3  lowp.ops                              emulated GEMM-like ops, accumulation, K-TanH
  4  lowp.recipes                          Recipe, named recipes, emulate/restore, LowpOptimizer
  5  lowp.techniques, lowp.analysis        paper techniques; numerics statistics, VRR, sensitivity
  6  lowp.distributed                      communication hooks, process-group plumbing
  7  lowp.experiments                      tasks, training loop, compare, report
  8  lowp.cli, lowp.__main__               command line
  9  lowp (the package facade, lowp/__init__.py)

A module may import its own layer and any layer below. ``import lowp`` / ``from lowp import X`` from inside the
package names the facade (layer 9), so lower modules import the defining module instead; the one exception is
the constant ``lowp.__version__`` (``from .. import __version__``).
"""
from __future__ import annotations

import ast
import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1] / "lowp"

LAYERS = {
    "lowp.rounding": 0,
    "lowp.formats": 1,
    "lowp.quantize": 2, "lowp.scaling": 2, "lowp.scaled_quantizer": 2,
    "lowp.ops": 3,
    "lowp.recipes": 4,
    "lowp.techniques": 5, "lowp.analysis": 5,
    "lowp.distributed": 6,
    "lowp.experiments": 7,
    "lowp.cli": 8, "lowp.__main__": 8,
    "lowp": 9,
}

#: Known upward imports, each (importing module, imported module) with the reason it is still there. Nothing else
#: may be added without a reason; an entry that no longer occurs fails the test (so the list only shrinks).
ALLOWED = {
    ("lowp.recipes.extensions", "lowp.techniques"):
        "plugin loading by name (PLUGINS, like entry points): importing the package registers its techniques, "
        "recipe families and modifiers; recipes never use a name of theirs, only the registries.",
}

_MODNAME = re.compile(r"lowp(\.[A-Za-z_][A-Za-z0-9_]*)+|lowp")


def module_name(path: pathlib.Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def layer_of(mod: str) -> int | None:
    """The layer of a lowp module name (longest prefix in LAYERS), None for a module outside lowp."""
    parts = mod.split(".")
    for n in range(len(parts), 0, -1):
        key = ".".join(parts[:n])
        if key in LAYERS:
            return LAYERS[key]
    return None


def imported_modules(source: str, mod: str, is_package: bool, known: set[str]) -> list[tuple[int, str]]:
    """(line, imported lowp module) for every import node anywhere in ``source`` (module ``mod``), and every string
    constant that is exactly a lowp module name in ``known``."""
    tree = ast.parse(source)
    package = mod if is_package else mod.rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "lowp"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            if base.split(".")[0] != "lowp":
                continue
            for a in node.names:  # ``from lowp.x import y``: y may be a submodule or a name of lowp.x
                if base == "lowp" and a.name == "__version__":
                    continue  # package metadata, a constant of the facade (no import of any layer)
                sub = f"{base}.{a.name}"
                out.append((node.lineno, sub if sub in known else base))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in known \
                and node.value != "lowp" and _MODNAME.fullmatch(node.value):
            out.append((node.lineno, node.value))
    return out


def violations(sources: dict[str, tuple[str, bool]], known: set[str]) -> list[tuple[str, int, str]]:
    """(module, line, imported module) for every import from a lower layer into a higher one."""
    bad = []
    for mod, (src, is_pkg) in sorted(sources.items()):
        lo = layer_of(mod)
        for line, target in imported_modules(src, mod, is_pkg, known):
            hi = layer_of(target)
            if hi is not None and lo is not None and hi > lo:
                bad.append((mod, line, target))
    return bad


def package_sources() -> dict[str, tuple[str, bool]]:
    return {module_name(p): (p.read_text(encoding="utf-8"), p.name == "__init__.py") for p in ROOT.rglob("*.py")}


def test_no_import_from_a_lower_layer_into_a_higher_one():
    sources = package_sources()
    assert len(sources) > 80, sorted(sources)  # the walk really found the package
    unmapped = [m for m in sources if layer_of(m) is None]
    assert not unmapped
    known = set(sources)
    found = violations(sources, known)
    pairs = {(m, t) for m, _, t in found}
    new = [f"{m}:{line} imports {t}" for m, line, t in found if (m, t) not in ALLOWED]
    assert not new, "upward imports (a lower layer importing a higher one):\n" + "\n".join(new)
    stale = sorted(set(ALLOWED) - pairs)
    assert not stale, f"allow-list entries that no longer occur (remove them): {stale}"


def test_checker_detects_planted_violations():
    known = {"lowp", "lowp.formats", "lowp.formats.float", "lowp.experiments", "lowp.experiments.train",
             "lowp.ops", "lowp.ops.functions", "lowp.recipes"}
    planted = {
        "lowp.formats.float": ("import torch\nfrom ..rounding import hash_bits\n"
                               "def f():\n    from ..experiments.train import train_run\n", False),
        "lowp.ops.functions": ("def g():\n    import lowp.recipes\n    from lowp import get_recipe\n"
                               "    m = 'lowp.experiments'\n    from .. import __version__\n", False),
        "lowp.experiments": ("from .train import x\nfrom ..ops import functions\n", True),
    }
    got = {(m, t) for m, _, t in violations(planted, known)}
    assert got == {("lowp.formats.float", "lowp.experiments.train"), ("lowp.ops.functions", "lowp.recipes"),
                   ("lowp.ops.functions", "lowp"), ("lowp.ops.functions", "lowp.experiments")}


def test_import_lowp_loads_only_the_core_layers():
    code = ("import sys, lowp\n"
            "print(sorted(m for m in sys.modules if m.split('.')[:2] in (['lowp', 'experiments'], "
            "['lowp', 'techniques'], ['lowp', 'analysis'], ['lowp', 'distributed'], ['lowp', 'cli'])))\n"
            "assert lowp.compare.__module__ == 'lowp.experiments.compare'\n"
            "assert lowp.get_recipe('pact-w4a4').name == 'pact-w4a4'  # a family registered by a technique\n"
            "print(sorted(lowp.__all__))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT.parent, timeout=120)
    assert r.returncode == 0, r.stderr
    loaded, names = r.stdout.splitlines()
    assert loaded == "[]", loaded
    assert "compare" not in names and "get_recipe" in names
