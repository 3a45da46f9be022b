"""``lowp formats``: a table of every named format."""
from __future__ import annotations

import json

from ..formats import FORMATS
from ..formats.registry import NOTES


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def rows() -> list[dict]:
    out = []
    for name, f in FORMATS.items():
        d = f.describe()
        d["name"] = name
        d["notes"] = "; ".join(x for x in (d.get("notes"), NOTES.get(name)) if x)
        out.append(d)
    return out


def run(args) -> int:
    table = rows()
    if args.json:
        print(json.dumps(table, indent=2))
        return 0
    cols = ["name", "bits", "bias", "max", "min_normal", "min_subnormal", "special", "notes"]
    cells = [[_fmt(r.get(c)) for c in cols] for r in table]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    print("  ".join(c.ljust(w) for c, w in zip(cols, widths)).rstrip())
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip())
    print("\nparametric names: fixed<IL,FL>, int<B>, dfp<B>, dfp<B>-b<BLOCK>, ternary-g<N>[-thr], "
          "<mx name>[-b<BLOCK>][-floor|-ceil|-rceil|-even] (MX block length and E8M0 scale rounding)")
    return 0


def register(sub) -> None:
    p = sub.add_parser("formats", help="list the named number formats",
                       description="Print every named format: bits, bias, max, min normal, min subnormal, "
                                   "special-value policy.")
    p.add_argument("--json", action="store_true", help="print the table as JSON")
    p.set_defaults(func=run)
