"""The README's Performance block, rendered from the benchmarks' JSON (``benchmarks/*.py --json``) and the default
comparison's results (``scripts/readme_compare.py``'s run folder). Every figure in the block comes from these
records; nothing here is a measured number. ``scripts/readme_performance.py`` runs the benchmarks and calls
:func:`render`.

Ratios are the benchmarks' own: times as a multiple of a baseline timed in the same process (× add, × clone, × FP32
step, × FP32 GEMM), or throughput as a multiple of a baseline's (real execution, K-TanH: > 1 is faster).
"""
from __future__ import annotations

from typing import Callable, Iterable

FLOAT_EXCLUDE = ("mx", "nvfp4", "int")  # quantize formats that are not plain float formats (prefixes)


def ratio(x: float | None) -> str:
    """A ratio as printed in the table: 2 decimals below 10, 1 above; — when not measured."""
    if x is None:
        return "—"
    return f"{x:.2f}" if abs(x) < 10 else f"{x:.1f}"


def span(vals: Iterable[float]) -> str:
    """``a–b`` over the values (``a`` when they agree to the printed digits), — when there are none."""
    v = sorted(vals)
    if not v:
        return "—"
    lo, hi = ratio(v[0]), ratio(v[-1])
    return lo if lo == hi else f"{lo}–{hi}"


def _size(lg: int) -> str:
    return f"2^{lg}"


class Quantize:
    """Lookups in bench_quantize's records: (log2n, format, rounding, variant) -> record."""

    def __init__(self, doc: dict):
        self.doc = doc
        self.rec = {(r["log2n"], r["format"], r["rounding"], r["variant"]): r for r in doc["records"]}
        self.sizes = list(dict.fromkeys(r["log2n"] for r in doc["records"]))
        self.formats = list(dict.fromkeys(r["format"] for r in doc["records"]
                                          if r["rounding"] not in ("-", "native")))

    def floats(self) -> list[str]:
        return [f for f in self.formats if not f.startswith(FLOAT_EXCLUDE)]

    def of(self, pred: Callable[[str], bool]) -> list[str]:
        return [f for f in self.formats if pred(f)]

    def vals(self, lg: int, fmts: list[str], rnd: str, variant: str, key: str) -> list[float]:
        return [self.rec[(lg, f, rnd, variant)][key] for f in fmts if (lg, f, rnd, variant) in self.rec]

    def per_size(self, fmts: list[str], rnd: str, variant: str, key: str, unit: str) -> str:
        parts = [f"{span(self.vals(lg, fmts, rnd, variant, key))}× {unit} at {_size(lg)}" for lg in self.sizes
                 if self.vals(lg, fmts, rnd, variant, key)]
        return ", ".join(parts) if parts else "—"

    def each(self, fmts: list[str], rnd: str, variant: str, key: str, unit: str = "") -> str:
        """``a / b× unit`` (one per format) for each size."""
        parts = []
        for lg in self.sizes:
            v = [ratio(self.rec[(lg, f, rnd, variant)][key]) if (lg, f, rnd, variant) in self.rec else "—"
                 for f in fmts]
            if any(x != "—" for x in v):
                parts.append(f"{' / '.join(v)}×{' ' + unit if unit else ''} at {_size(lg)}")
        return ", ".join(parts) if parts else "—"

    def native(self) -> tuple[list[str], str]:
        names = list(dict.fromkeys(r["format"] for r in self.doc["records"] if r["rounding"] == "native"))
        return names, self.each(names, "native", "alloc", "x_add", "the add bound")


def quantize_rows(doc: dict) -> list[tuple[str, str]]:
    q = Quantize(doc)
    fl = q.floats()
    rows = []
    if fl:
        names = ", ".join(fl)
        rows += [(f"`quantize` to a float format ({names}), nearest, into `out=`",
                  q.per_size(fl, "nearest", "out=", "x_add", "`torch.add(x, 0, out=y)` (the bandwidth bound)")),
                 ("same, allocating", q.per_size(fl, "nearest", "alloc", "x_clone", "`x.clone()`")),
                 ("float formats, stochastic, into `out=`",
                  q.per_size(fl, "stochastic", "out=", "x_add", "the add bound"))]
    names, cells = q.native()
    if names:
        rows.append((f"torch's own round trips `x.to(dtype).float()`, same run: "
                     f"{' / '.join(n.replace('torch ', '') for n in names)}", f"{cells} (these allocate)"))
    for label, pred in (("MX {} (block scales)", lambda f: f.startswith("mx")),
                        ("{} (two-level scales)", lambda f: f.startswith("nvfp4")),
                        ("{} per tensor", lambda f: f.startswith("int"))):
        fm = q.of(pred)
        if not fm:
            continue
        near = q.each(fm, "nearest", "out=", "x_add", "the add bound")
        sto = q.each(fm, "stochastic", "out=", "x_add")
        rows.append((f"{label.format(' / '.join(fm))}, nearest into `out=`",
                     near + ("" if sto == "—" else f" (stochastic {sto})")))
    return rows


def _task_of(name: str) -> str:
    return name.split(" ", 1)[0]


def emulate_rows(doc: dict) -> list[tuple[str, str]]:
    recs = doc["records"]
    tasks = list(dict.fromkeys(r["task"] for r in recs))
    by = {(r["task"], r["recipe"]): r for r in recs}
    plain = [n for n in dict.fromkeys(r["recipe"] for r in recs) if not n.endswith("+noattn") and n != "fp8-ibm"]
    rows = []
    for t in tasks:
        cells = [ratio(by[(t, n)]["ratio"]) if (t, n) in by else "—" for n in plain]
        fp32 = [r["fp32_ms"] for r in recs if r["task"] == t]
        rows.append((f"emulated training step, {t}: {' / '.join(plain)}",
                     f"{' / '.join(cells)}× FP32 (FP32 step {span(fp32)} ms)"))
        noattn = [n for n in dict.fromkeys(r["recipe"] for r in recs if r["task"] == t) if n.endswith("+noattn")]
        if noattn:
            rows.append((f"same, {t}, attention products native (`attention=None`): "
                         f"{' / '.join(n[:-len('+noattn')] for n in noattn)}",
                         f"{' / '.join(ratio(by[(t, n)]['ratio']) for n in noattn)}× FP32"))
    ibm = [t for t in tasks if (t, "fp8-ibm") in by]
    if ibm:
        rows.append(("emulated fp8-ibm training step (chunked (1,6,9) accumulation in every GEMM): "
                     + " / ".join(ibm), f"{' / '.join(ratio(by[(t, 'fp8-ibm')]['ratio']) for t in ibm)}× FP32"))
    for u in doc.get("unavailable", []):
        rows.append((f"emulated step, {u['task']}: {u['recipe'] or 'task'}", f"not measured: {u['error']}"))
    return rows


def accumulate_rows(doc: dict) -> list[tuple[str, str]]:
    return [(f"format-accumulated GEMM, {r['case']} ({r['shape'].replace('x', '×')})",
             f"{ratio(r['ratio'])}× FP32 GEMM ({r['path']} path)") for r in doc["records"]]


def inference_rows(doc: dict) -> list[tuple[str, str]]:
    sizes = doc["args"]["sizes"].replace(",", "-")
    rows = []
    same = doc.get("int8_kernels_bit_identical", {})
    for batch in dict.fromkeys(r["batch"] for r in doc["records"]):
        rs = [r for r in doc["records"] if r["batch"] == batch and r["variant"] != "fp32"]
        note = {True: "; lowp's two INT8 kernels bit-identical", False: "; lowp's two INT8 kernels DIFFER",
                None: "; fbgemm not exact here: lowp runs on `_int_mm`"}.get(same.get(str(batch)), "")
        rows.append((f"real execution, MLP {sizes}, batch {batch}, {doc['args']['threads']} thread(s): "
                     + " / ".join(r["variant"] for r in rs),
                     f"{' / '.join(ratio(r['x_fp32']) for r in rs)}× FP32 throughput{note}"))
    return rows


def ktanh_rows(doc: dict) -> list[tuple[str, str]]:
    a = doc["args"]
    return [(f"K-TanH: {' / '.join(r['row'] for r in doc['records'] if r['row'].startswith('ktanh'))}, "
             f"2^{a['log2n']} values, {a['threads']} thread(s)",
             " / ".join(ratio(r["vs_tanh_bf16"]) for r in doc["records"] if r["row"].startswith("ktanh"))
             + "× the throughput of `torch.tanh` on BF16")]


def stats_rows(doc: dict) -> list[tuple[str, str]]:
    a = doc["args"]
    by = {r["every"]: r for r in doc["records"]}
    every = doc.get("default_every", a["every"])
    return [(f"numerics statistics (`NumericsCollector`), {a['task']} {a['recipe']}, sampled every {a['every']} "
             f"steps{' (the default)' if a['every'] == every else ''} / every step",
             f"{ratio(by[a['every']]['ratio'])} / {ratio(by[1]['ratio'])}× the plain emulated step "
             f"({doc['plain_step_ms']:.2f} ms)")]


def compare_rows(doc: dict) -> list[tuple[str, str]]:
    agg = doc["aggregate"]
    first = ", ".join(f"{a['recipe']} {a['first_use_s']:.1f} s" for a in agg if a.get("first_use_s") is not None)
    steps = ", ".join(f"{a['recipe']} {ratio(a['step_ratio'])}" for a in agg
                      if a.get("step_ratio") is not None and a["recipe"] != doc.get("reference"))
    wall = "" if doc.get("wall_s") is None else f"{doc['wall_s']:.0f} s wall; "
    return [(f"`lowp compare` ({doc['task']}, {len(agg)} recipes × {len(doc['seeds'])} seeds × {doc['epochs']} "
             f"epochs; read from `scripts/readme_compare.py`'s run of {doc['date']})",
             f"{wall}first use (compilation): {first}; steady step × FP32: {steps}")]


INDUCTOR = "inductor's callable"


class Bounds:
    """``benchmarks/bench_bounds.py``'s records by (row, what[, log2n])."""

    def __init__(self, doc: dict | None):
        self.rec = {}
        for r in (doc or {}).get("records", []):
            self.rec[(r["row"], r["what"]) + ((r["log2n"],) if "log2n" in r else ())] = r

    def us(self, what: str) -> str:
        return f"{self.rec[('call', what)]['us']:.0f} µs"

    def x(self, what: str, lg: int) -> str:
        return f"{ratio(self.rec[('kernels', what, lg)]['x_add'])}×"

    def ms(self, what: str) -> str:
        return f"{self.rec[('attention', what)]['fwd_bwd_ms']:.1f} ms"


def bounds_rows(doc: dict) -> list[tuple[str, str]]:
    b = Bounds(doc)
    return [("what bounds it, timed alone: one compiled call of lowp (e5m2 rounding with current scaling, 256 "
             "elements) / its signature lookup / inductor's callable in it / an ATen add of the same size",
             " / ".join(b.us(w) for w in ("whole call", "signature lookup", "inductor's callable", "ATen add"))),
            ("same, at 2^19 elements: a compiled copy / amax / e5m2 rounding / e5m2 rounding with current scaling",
             " / ".join(b.x(w, 19) for w in ("compiled copy", "amax", "e5m2 nearest",
                                              "e5m2 nearest, current scaling")) + " the add"),
            ("same, at 2^24: the 32-bit hash alone / e4m3 nearest / e4m3 stochastic",
             " / ".join(b.x(w, 24) for w in ("hash (32 random bits) alone", "e4m3 nearest",
                                              "e4m3 stochastic (32 bits)")) + " the add"),
            ("same, attention 32×4×64×16 causal (one layer of the LM task), forward+backward: fused SDPA (FP32 "
             "step) / torch's math SDPA in FP32 (unfused) / lowp's captured attention, fp8-hybrid",
             " / ".join(b.ms(w) for w in ("fused SDPA (FP32 step)", "math SDPA (FP32, unfused)",
                                          "lowp captured attention, fp8-hybrid")))]


ROWS = {"quantize": quantize_rows, "emulate": emulate_rows, "compare": compare_rows,
        "accumulate": accumulate_rows, "inference": inference_rows, "ktanh": ktanh_rows, "stats": stats_rows,
        "bounds": bounds_rows}


# ---- targets -------------------------------------------------------------------------------------------------

def _q_max(doc, fmts, rnd, variant, key):
    """The worst ratio over the formats and every size measured (the targets hold at each size)."""
    q = Quantize(doc)
    v = [r for lg in q.sizes for r in q.vals(lg, fmts(q), rnd, variant, key)]
    return max(v) if v else None


def _emu(doc, task, recipe):
    r = [x["ratio"] for x in doc["records"] if x["task"].startswith(task) and x["recipe"] == recipe]
    return r[0] if r else None


def targets(res: dict) -> list[tuple[str, float | None, float, str]]:
    """(target, measured worst case, bound, what bounds it) for each of the project's speed targets whose benchmark ran.
    Quantize targets are the worst case over every size measured."""
    out = []
    b = Bounds(res.get("bounds"))
    stoch_expl = "a counter-based hash draws 32 random bits per element"
    if ("kernels", "hash (32 random bits) alone", 24) in b.rec:
        stoch_expl += (f" (alone {b.x('hash (32 random bits) alone', 24)} the add at 2^24, where rounding to nearest "
                       f"takes {b.x('e4m3 nearest', 24)} and stochastic rounding {b.x('e4m3 stochastic (32 bits)', 24)}"
                       ")")
    stoch_expl += (", and the kernel computes both the normal-range and the target-subnormal decision for every "
                   "element (a vectorised select evaluates both sides): compute-bound. A cheaper generator, which "
                   "the issue allows, would change every seeded stochastic result")
    q = res.get("quantize")
    if q:
        lg = max(Quantize(q).sizes)
        at = ", ".join(_size(s) for s in Quantize(q).sizes)
        add_clone = Quantize(q).rec.get((lg, "clone", "-", "alloc"), {}).get("x_add")
        out += [
            (f"float formats, nearest into `out=` ≤ 2× add ({at})",
             _q_max(q, lambda q_: q_.floats(), "nearest", "out=", "x_add"), 2.0,
             "the compiled short path reads and writes each element once; what remains is the add-and-mask work"),
            (f"float formats, stochastic into `out=` ≤ 3× add ({at})",
             _q_max(q, lambda q_: q_.floats(), "stochastic", "out=", "x_add"), 3.0,
             stoch_expl),
            (f"allocating ≤ 1.2× `clone()` ({at})",
             _q_max(q, lambda q_: q_.floats(), "nearest", "alloc", "x_clone"), 1.2,
             f"`clone()` itself is {ratio(add_clone)}× the add bound at 2^{lg} (page faults on the fresh result); the "
             "rounding adds its own pass over memory. Pass `out=` (or reuse a buffer) in hot loops"),
            (f"MX and NVFP4 ≤ 3× add ({at})",
             _q_max(q, lambda q_: q_.of(lambda f: f.startswith(("mx", "nvfp4"))), "nearest", "out=", "x_add"), 3.0,
             "two passes over the input (the block scales, then the rounding); MX rounds with the general kernel and "
             "a per-element exponent, NVFP4 also computes a second level of scales"),
            (f"int8 per tensor ≤ 2× add ({at})",
             _q_max(q, lambda q_: q_.of(lambda f: f.startswith("int")), "nearest", "out=", "x_add"), 2.0,
             "two passes (the tensor's amax, then the rounding), and the division runs in float64 to match the "
             "reference bit for bit")]
    e = res.get("emulate")
    if e:
        expl = ("the emulation's fixed costs per GEMM at these small sizes: autograd nodes and Python per emulated "
                "op, and a compiled call per rounding")
        attn = "; captured attention runs as two GEMMs and a softmax instead of the fused SDPA kernel"
        if ("call", "whole call") in b.rec:
            expl += (f" ({b.us('whole call')} a call on 256 elements against {b.us('ATen add')} for an add: "
                     f"{b.us(INDUCTOR)} in inductor's callable, "
                     f"{b.us('signature lookup')} in lowp's signature lookup). At 2^19 elements even a compiled copy "
                     f"takes {b.x('compiled copy', 19)} an add, a rounding {b.x('e5m2 nearest', 19)} and a rounding "
                     "with current scaling (an amax pass, then the rounding) "
                     f"{b.x('e5m2 nearest, current scaling', 19)}: most of it is the fixed cost of a compiled call and "
                     "the second pass over memory, not the rounding's arithmetic (`benchmarks/bench_bounds.py`)")
            attn = (f"; captured attention takes {b.ms('lowp captured attention, fp8-hybrid')} a layer forward and "
                    f"backward against {b.ms('fused SDPA (FP32 step)')} for the fused SDPA of the FP32 step, and "
                    f"torch's own unfused math attention already takes {b.ms('math SDPA (FP32, unfused)')} in FP32")
        out += [("emulated fp8-hybrid step ≤ 1.25× FP32, MLP", _emu(e, "mlp", "fp8-hybrid"), 1.25, expl),
                ("emulated fp8-hybrid step ≤ 1.25× FP32, CNN", _emu(e, "cnn", "fp8-hybrid"), 1.25, expl),
                ("emulated fp8-hybrid step ≤ 1.5× FP32, LM", _emu(e, "lm", "fp8-hybrid"), 1.5, expl + attn)]
    c = res.get("compare")
    if c:
        by = {a["recipe"]: a for a in c["aggregate"]}
        first = {a["recipe"]: a["first_use_s"] for a in c["aggregate"] if a.get("first_use_s") is not None}
        ref = by.get(c.get("reference"), {}).get("step_s")
        step = f" ({1e3 * ref:.1f} ms)" if ref else ""
        slow = max(first, key=first.get) if first else None
        out += [("default compare: fp8-hybrid steady step ≤ 2× FP32", by.get("fp8-hybrid", {}).get("step_ratio"),
                 2.0, f"the FP32 step is short{step}: the emulated ops' fixed costs are most of the difference "
                 "(measured on the mnist1d CNN: the 8 compiled calls of a step take about 0.6 ms, the emulated ops' "
                 "Python and autograd nodes about 1 ms; bf16, which compiles nothing, costs 1.1 ms a step more "
                 "than FP32)"),
                ("default compare: first-use compilation, all recipes, ≤ 15 s",
                 sum(first.values()) if first else None, 15.0,
                 (f"{slow} alone takes {first[slow]:.1f} s (its kernels are compiled on first use)" if slow else "")
                 + (f"; with an empty compile cache torch's own first compilation (a one-line function, timed alone) "
                    f"takes {c['torch_first_compile_s']:.1f} s on this machine (C++ compiler and vector-ISA probes, a "
                    "precompiled header), paid by the first recipe that compiles"
                    if c.get("torch_first_compile_s") else ""))]
    s = res.get("stats")
    if s:
        by = {r["every"]: r for r in s["records"]}
        out.append((f"numerics statistics ≤ 1.10× at the default sampling (every {s['args']['every']})",
                    by[s["args"]["every"]]["ratio"], 1.10, "each sampled step computes statistics of every role"))
    return [t for t in out if t[1] is not None]


def _measured(t) -> str:
    return f"{t[1]:.1f} s" if t[0].endswith(" s") else f"{ratio(t[1])}×"


def render(res: dict, stamp: str, missing_note: str = "") -> str:
    """The Markdown block: the table (one section per benchmark, in ROWS order), the stamp line, the targets."""
    lines = ["| what | ratio |", "|---|---|"]
    for name, fn in ROWS.items():
        if name in res:
            lines += [f"| {w} | {v} |" for w, v in fn(res[name])]
    lines += ["", stamp]
    if missing_note:
        lines += ["", missing_note]
    ts = targets(res)
    met = [t for t in ts if t[1] <= t[2]]
    unmet = [t for t in ts if t[1] > t[2]]
    if ts:
        lines += ["", "**Targets met** (the project's speed targets; worst case measured): "
                  + ("; ".join(f"*{t[0]}*: {_measured(t)}" for t in met) if met else "none") + "."]
        lines += ["", "**Targets not met, and what bounds them**:"] if unmet else []
        lines += [f"- *{t[0]}*: {_measured(t)}; {t[3]}." for t in unmet]
    return "\n".join(lines)
