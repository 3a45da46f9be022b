"""``lowp recipes``: a table of the named recipes (roles, accumulation, master weights, loss scaling, source)."""
from __future__ import annotations

import json

from ..recipes import RECIPES, get_recipe
from ..recipes.recipe import OPERAND_CASTS, ROLES

_SHORT = {"input": "x", "weight": "w", "output": "y", "grad_output": "dy", "grad_input": "dx", "grad_weight": "dw",
          "weight_dgrad": "w@dgrad", "input_wgrad": "x@wgrad", "grad_output_wgrad": "dy@wgrad", "bias": "b",
          "attention": "att"}


def _spec(s) -> str:
    if s is None:
        return "fp32"
    out = s.format
    if s.rounding != "nearest":
        out += "/sr" if s.rounding == "stochastic" else f"/{s.rounding}"
    if s.scaling != "none":
        out += f"@{s.scaling}"
    return out


def roles_text(r) -> str:
    """Compact roles, e.g. 'x,w=e4m3@current dy=e5m2@current': roles with the same spec grouped, FP32 left out."""
    groups: dict[str, list[str]] = {}
    for role in ROLES + OPERAND_CASTS + ("bias", "attention"):
        s = getattr(r, role)
        if s is not None:
            groups.setdefault(_spec(s), []).append(_SHORT[role])
    text = " ".join(f"{','.join(v)}={k}" for k, v in groups.items()) or "all fp32"
    return text + (f" rht{r.wgrad_hadamard}@wgrad" if getattr(r, "wgrad_hadamard", None) else "")


def row(r) -> dict:
    return {
        "name": r.name,
        "roles": roles_text(r),
        "accumulation": ("fp32" if r.accumulate is None else f"{r.accumulate}" + (f"/chunk {r.chunk}" if r.chunk else ""))
        + ("" if r.accumulate_backward is None else f", bwd {r.accumulate_backward}"),
        "master": _spec(r.master),
        "optim_state": _spec(r.optim_state),
        "loss_scaling": r.loss_scaling.kind,
        "exempt": ", ".join((["first/last"] if r.exempt_first_last else []) + list(r.exempt)) or "-",
        "source": r.source,
    }


def run(args) -> int:
    recipes = [get_recipe(n) for n in args.names] if args.names else list(RECIPES.values())
    if args.json:
        print(json.dumps([r.to_dict() for r in recipes], indent=2))
        return 0
    table = [row(r) for r in recipes]
    cols = list(table[0])
    widths = [max(len(c), *(len(t[c]) for t in table)) for c in cols]
    print("  ".join(c.ljust(w) for c, w in zip(cols, widths)).rstrip())
    for t in table:
        print("  ".join(t[c].ljust(w) for c, w in zip(cols, widths)).rstrip())
    if args.verbose:
        for r in recipes:
            print(f"\n{r.name}: {r.notes}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("recipes", help="list the named training recipes",
                       description="Print the named recipes: per-role formats (x input, w weight, y output, dy "
                                   "grad-output, dx grad-input, dw grad-weight, b bias, w@dgrad/x@wgrad/dy@wgrad the "
                                   "per-GEMM operand casts, att the operands of attention products q·kᵀ and P·v; "
                                   "/sr stochastic, @scaling), "
                                   "accumulation, master weights, loss scaling, exempt layers, source.")
    p.add_argument("names", nargs="*", help="recipe names or .json paths (default: all)")
    p.add_argument("--json", action="store_true", help="print the full recipes as JSON")
    p.add_argument("-v", "--verbose", action="store_true", help="also print each recipe's notes")
    p.set_defaults(func=run)
