"""16-bit fixed point <IL,FL> x {stochastic, nearest} on digits-mlp and mnist1d-cnn (issue 20, Gupta et al. 2015).

Settings (every one trained from the same seeds, data order and optimiser as FP32: the task's SGD, momentum 0.9,
cosine learning rate; only the numerics differ):

- ``fp32``          the reference; also records the FP32 value ranges (max |y| per layer, the fraction of errors
                    |dy| below 2^-FL and of weight updates |Δw| below half an ULP 2^-FL/2, for each FL swept)
- ``u<FL>-sr``      Gupta's setting: every rounded tensor in <16-FL, FL> with stochastic rounding -- GEMM inputs,
                    weights and outputs (products summed in FP32 and the sum rounded once), errors (grad_output),
                    grad_input, weight gradients, and the weights themselves (no FP32 copy: w <- SR(w - lr·v))
- ``u<FL>-rn``      the same with round-to-nearest everywhere
- ``split-sr/-rn``  per-role IL (our extension, not in the paper): activations (input, output) in <8,8>, weights,
                    gradients and the weights' storage in <2,14>
- ``old-recipe``    (digits only) lowp's former fixed16-sr: <4,12>, forward nearest, backward and weights stochastic
- ``old-bwd-only``  (digits only) the same with the forward roles left in FP32 (shows which roles break it)
- ``old-exempt-last`` (digits only) the former recipe with the last Linear's GEMM roles (the logits) in FP32
                    (its weights are still stored in <4,12>: master rounding covers every parameter)

Each run records the final test accuracy, per-epoch accuracy, per (layer, role) numerics (mean flushed-to-zero and
saturated fractions, amax, from lowp's NumericsCollector every ``--numerics-every`` steps), the fraction of weights
a step leaves unchanged and the fraction saturated at the end. Writes ``docs/results/fixed-point.json`` (every
number) and ``docs/results/fixed-point.md`` (tables), and a plot ``docs/results/fixed-point.png``.
Runs are cached in the JSON: a rerun only trains what is missing (``--fresh`` to retrain).

    PYTHONPATH=. python3 scripts/fixed_point_sweep.py --jobs 2          # the doc's figures
    PYTHONPATH=. python3 scripts/fixed_point_sweep.py --seeds 1 --epochs digits-mlp=2,mnist1d-cnn=1 \\
        --out /tmp/fp-smoke.json --doc /tmp/fp-smoke.md                  # smoke
"""
from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import pathlib
import statistics
import time

import torch

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "results" / "fixed-point.md"
OUT = ROOT / "docs" / "results" / "fixed-point.json"
PLOT = ROOT / "docs" / "results" / "fixed-point.png"
FLS = (8, 10, 12, 14)
TASKS = ("digits-mlp", "mnist1d-cnn")
EPOCHS = {"digits-mlp": 10, "mnist1d-cnn": 10}
FWD = ("input", "weight", "output")
BWD = ("grad_output", "grad_input", "grad_weight")
DIGITS_ONLY = ("old-recipe", "old-bwd-only", "old-exempt-last")


def setting_names(task: str) -> list[str]:
    names = ["fp32"] + [f"u{fl}-{r}" for fl in FLS for r in ("sr", "rn")] + ["split-sr", "split-rn"]
    return names + (list(DIGITS_ONLY) if task == "digits-mlp" else [])


def make_recipe(name: str):
    """The Recipe of setting ``name`` (see the module docstring)."""
    from lowp.recipes.recipe import Recipe, TensorSpec as T

    if name == "fp32":
        return Recipe(name="fp32")
    if name.startswith("u"):
        fl, r = name[1:].split("-")
        fl = int(fl)
        s = T(f"fixed<{16 - fl},{fl}>", "stochastic" if r == "sr" else "nearest")
        return Recipe(name=name, **{k: s for k in FWD + BWD + ("master",)})
    if name.startswith("split-"):
        rnd = "stochastic" if name.endswith("sr") else "nearest"
        act, w = T("fixed<8,8>", rnd), T("fixed<2,14>", rnd)
        return Recipe(name=name, input=act, output=act, weight=w, grad_output=w, grad_input=w, grad_weight=w,
                      master=w)
    if name in DIGITS_ONLY:
        sr, nr = T("fixed<4,12>", "stochastic"), T("fixed<4,12>")
        fwd = {} if name == "old-bwd-only" else {k: nr for k in FWD}
        exempt = ("5",) if name == "old-exempt-last" else ()  # digits-mlp's last Linear (the logits)
        return Recipe(name=name, master=sr, exempt=exempt, **fwd, **{k: sr for k in BWD})
    raise ValueError(f"unknown setting {name!r}")


def _gemm_modules(model):
    return [(n, m) for n, m in model.named_modules()
            if isinstance(getattr(m, "weight", None), torch.Tensor) and m.weight.dim() >= 2]


def run_one(task_name: str, setting: str, seed: int, epochs: int, numerics_every: int) -> dict:
    """Train one setting; returns the record stored in the JSON."""
    from lowp.experiments.tasks import get_task
    from lowp.experiments.train import LoopState, RunSettings, apply_recipe, prepare_run, train_epochs

    torch.set_num_threads(1)
    task = get_task(task_name)
    recipe = make_recipe(setting)
    st = RunSettings(task=task_name, seed=seed, epochs=epochs, lr=task.lr, batch_size=task.batch_size)
    task, recipe, data, model = prepare_run(task, recipe, st)
    model, opt, base = apply_recipe(model, recipe, lambda p: task.make_optimizer(p, st.lr))
    params = [p for p in model.parameters() if p.requires_grad]
    upd = {"unchanged": [], **({f"below_half_ulp_fl{fl}": [] for fl in FLS} if setting == "fp32" else {})}
    snap: list[torch.Tensor] = []
    ranges: dict[str, dict] = {}
    if setting == "fp32":  # FP32 value ranges, for the explanation of the fixed-point failures
        def hook(name):
            def fwd(m, inp, out):
                r = ranges.setdefault(name, {"max_abs_output": 0.0, **{f"dy_below_fl{fl}": [] for fl in FLS}})
                r["max_abs_output"] = max(r["max_abs_output"], float(out.detach().abs().max()))
                if out.requires_grad and fwd.calls % numerics_every == 0:
                    def on_grad(g):
                        for fl in FLS:
                            a = g.abs()[g != 0]  # ReLU-masked errors are exactly 0: count the others
                            if a.numel():
                                r[f"dy_below_fl{fl}"].append(float((a < 2.0**-fl).float().mean()))
                    out.register_hook(on_grad)
                fwd.calls += 1
            fwd.calls = 0
            return fwd
        for n, m in _gemm_modules(model):
            m.register_forward_hook(hook(n))

    def on_step(steps: int, loss: float) -> None:
        if steps % numerics_every == numerics_every - 1:
            snap[:] = [p.detach().clone() for p in params]
        elif steps % numerics_every == 0 and snap:
            d = torch.cat([(p.detach() - s).flatten() for p, s in zip(params, snap)])
            upd["unchanged"].append(float((d == 0).float().mean()))
            if setting == "fp32":
                a = d.abs()[d != 0]  # weights of always-zero inputs get no gradient at all: not counted
                for fl in FLS:
                    upd[f"below_half_ulp_fl{fl}"].append(float((a < 2.0 ** (-fl - 1)).float().mean()))

    t0 = time.perf_counter()
    state = LoopState()
    train_epochs(task, data, st, model, opt, base, numerics_every=numerics_every, on_step=on_step, state=state)
    wall = time.perf_counter() - t0
    rec = {"task": task_name, "setting": setting, "seed": seed, "epochs": epochs,
           "accuracy": state.history[-1]["test_metric"] if state.history else None,
           "history": [h["test_metric"] for h in state.history], "diverged": state.diverged_at is not None,
           "wall_s": round(wall, 1), "recipe": json.loads(json.dumps(recipe.to_dict()))}
    rec["updates"] = {k: statistics.fmean(v) if v else None for k, v in upd.items()}
    m = recipe.master
    if m is not None:
        mx = m.fmt.max
        w = torch.cat([p.detach().flatten() for p in params])
        rec["weights_saturated_end"] = float((w.abs() >= mx).float().mean())
    if ranges:
        rec["fp32_ranges"] = {n: {"max_abs_output": r["max_abs_output"],
                                  **{k: statistics.fmean(v) for k, v in r.items() if k.startswith("dy_") and v}}
                              for n, r in ranges.items()}
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in state.numerics or ():
        groups.setdefault((r["layer"], r["role"]), []).append(r)
    rec["numerics"] = [{"layer": layer, "role": role, "underflow": statistics.fmean(x["underflow"] for x in rs),
                        "overflow": statistics.fmean(x["overflow"] for x in rs),
                        "overflow_first": rs[0]["overflow"], "amax": max(x["amax"] for x in rs), "samples": len(rs)}
                       for (layer, role), rs in groups.items()]
    return rec


def _job(args):
    return run_one(*args)


# ------------------------------------------------------------------------------------------------------ the doc

def _key(r: dict) -> str:
    return f"{r['task']}|{r['setting']}|{r['seed']}|{r['epochs']}"


def _stats(vals: list[float]) -> tuple[float, float]:
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0)


def _rows(runs: list[dict], task: str, epochs: int) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in runs:
        if r["task"] == task and r["epochs"] == epochs:
            out.setdefault(r["setting"], []).append(r)
    for v in out.values():
        v.sort(key=lambda r: r["seed"])
    return out


def _numerics_line(rs: list[dict]) -> str:
    """Per role, over layers and seeds: max mean saturated %, mean flushed-to-zero %."""
    roles: dict[str, list[dict]] = {}
    for r in rs:
        for n in r["numerics"]:
            roles.setdefault(n["role"], []).append(n)
    parts = []
    for role in FWD + BWD:
        ns = roles.get(role)
        if not ns:
            continue
        parts.append(f"{role} {100 * statistics.fmean(n['underflow'] for n in ns):.0f}/"
                     f"{100 * max(n['overflow'] for n in ns):.0f}")
    return ", ".join(parts)


def _last_output_overflow(rs: list[dict]) -> float | None:
    vals = []
    for r in rs:
        outs = [n for n in r["numerics"] if n["role"] == "output"]
        if outs:
            vals.append(outs[-1]["overflow"])  # records come in forward order: the last is the logits layer
    return statistics.fmean(vals) if vals else None


def write_doc(runs: list[dict], doc: pathlib.Path, command: str, wall: float, epochs: dict[str, int],
              plot: pathlib.Path | None) -> str:
    lines = ["# 16-bit fixed point with stochastic rounding (Gupta et al. 2015): replication on the tiny tasks",
             "", "<!-- written by scripts/fixed_point_sweep.py: do not edit by hand -->", "",
             f"Command: `{command}` (cached runs are reused; this invocation's wall time {wall / 60:.1f} min on a "
             "CPU shared by other jobs, so per-run times are noisy; the sum of all runs' training times "
             f"{sum(r['wall_s'] for r in runs) / 60:.1f} min, one thread each).", "",
             "Training: each task's SGD (momentum 0.9, cosine learning rate from the task's peak lr) and batch size, "
             + ", ".join(f"{t} {e} epochs" for t, e in epochs.items())
             + (" (mnist1d-cnn below its default 10 epochs to keep the sweep affordable)"
                if epochs.get("mnist1d-cnn", 10) < 10 else "")
             + ". Accuracy is the final test accuracy in %, mean ± sample std over seeds; Δ against FP32 at the "
               "same epochs and seeds.", ""]
    for task in epochs:
        rows = _rows(runs, task, epochs[task])
        if not rows:
            continue
        ref = rows.get("fp32")
        ref_acc = {r["seed"]: r["accuracy"] for r in ref} if ref else {}
        lines += [f"## {task} ({epochs[task]} epochs)", "",
                  "| setting | formats / rounding | accuracy % | Δ vs FP32 (pts) | per seed | last-layer output "
                  "saturated % | numerics: role flushed-to-zero % / max saturated % (mean over sampled steps) | "
                  "weights unchanged by a step % | weights saturated at end % |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for name in setting_names(task):
            rs = rows.get(name)
            if not rs:
                continue
            acc = [100 * r["accuracy"] for r in rs]
            m, s = _stats(acc)
            d = [100 * (r["accuracy"] - ref_acc[r["seed"]]) for r in rs if r["seed"] in ref_acc]
            dm = f"{statistics.fmean(d):+.1f}" if d else "–"
            lo = _last_output_overflow(rs)
            unch = [r["updates"]["unchanged"] for r in rs if r["updates"].get("unchanged") is not None]
            sat = [r["weights_saturated_end"] for r in rs if "weights_saturated_end" in r]
            lines.append(
                f"| {name} | {_describe(name)} | {m:.1f} ± {s:.1f} | {dm} | {' '.join(f'{a:.1f}' for a in acc)} | "
                f"{'–' if lo is None else f'{100 * lo:.1f}'} | {_numerics_line(rs) or '–'} | "
                f"{f'{100 * statistics.fmean(unch):.0f}' if unch else '–'} | "
                f"{f'{100 * statistics.fmean(sat):.2f}' if sat else '–'} |")
        lines.append("")
        if ref:
            lines += _fp32_ranges(ref, task)
    lines += _region(runs, epochs)
    if plot is not None and plot.exists():
        lines += [f"![accuracy vs FL]({plot.name})", ""]
    text = "\n".join(lines) + "\n"
    return text


def _describe(name: str) -> str:
    if name == "fp32":
        return "FP32"
    if name.startswith("u"):
        fl, r = name[1:].split("-")
        return f"all <{16 - int(fl)},{fl}>, {'stochastic' if r == 'sr' else 'nearest'}"
    if name.startswith("split-"):
        return f"act <8,8>, w/grads/update <2,14>, {'stochastic' if name.endswith('sr') else 'nearest'}"
    if name == "old-recipe":
        return "former fixed16-sr: <4,12>, fwd nearest, bwd + update stochastic"
    if name == "old-exempt-last":
        return "former fixed16-sr, last layer's GEMM roles (logits) FP32"
    return "former fixed16-sr, forward roles FP32"


def _fp32_ranges(ref: list[dict], task: str) -> list[str]:
    layers = list(ref[0].get("fp32_ranges", {}))
    if not layers:
        return []
    lines = [f"FP32 value ranges on {task} (max over the run, mean over seeds; errors sampled every few steps):", "",
             "| layer | max \\|output\\| | " + " | ".join(f"non-zero errors \\|dy\\| < 2^-{fl} %" for fl in FLS) + " |",
             "|---|---|" + "---|" * len(FLS)]
    for n in layers:
        mx = max(r["fp32_ranges"][n]["max_abs_output"] for r in ref)
        cells = [statistics.fmean(100 * r["fp32_ranges"][n].get(f"dy_below_fl{fl}", math.nan) for r in ref)
                 for fl in FLS]
        lines.append(f"| {n} | {mx:.1f} | " + " | ".join(f"{c:.0f}" for c in cells) + " |")
    u = [statistics.fmean(r["updates"][f"below_half_ulp_fl{fl}"] for r in ref) for fl in FLS]
    lines += ["", "FP32 non-zero weight updates \\|Δw\\| below half an ULP 2^-FL/2 (round-to-nearest drops them): "
              + ", ".join(f"FL={fl}: {100 * x:.0f}%" for fl, x in zip(FLS, u)) + ".", ""]
    return lines


def _region(runs: list[dict], epochs: dict[str, int]) -> list[str]:
    """Settings where stochastic is within 1 point of FP32 and nearest is worse by more than 2 points (by seed)."""
    lines = ["## Where stochastic rounding trains and nearest does not", "",
             "Criterion (issue 20): mean over seeds of SR within 1 point of FP32 and nearest more than 2 points "
             "below SR, on both tasks.", "", "| pair | " + " | ".join(epochs) + " | both |", "|---|"
             + "---|" * (len(epochs) + 1)]
    pairs = [(f"u{fl}", f"u{fl}-sr", f"u{fl}-rn") for fl in FLS] + [("split", "split-sr", "split-rn")]
    for label, a, b in pairs:
        cells, ok_all = [], True
        for task in epochs:
            rows = _rows(runs, task, epochs[task])
            if not all(k in rows for k in ("fp32", a, b)):
                cells.append("–")
                ok_all = False
                continue
            f = statistics.fmean(100 * r["accuracy"] for r in rows["fp32"])
            sa = statistics.fmean(100 * r["accuracy"] for r in rows[a])
            sb = statistics.fmean(100 * r["accuracy"] for r in rows[b])
            ok = sa >= f - 1 and sb < sa - 2
            ok_all &= ok
            cells.append(f"SR {sa - f:+.1f}, RN {sb - f:+.1f}: {'yes' if ok else 'no'}")
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {'**yes**' if ok_all else 'no'} |")
    return lines + [""]


def make_plot(runs: list[dict], epochs: dict[str, int], path: pathlib.Path) -> bool:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, axes = plt.subplots(1, len(epochs), figsize=(5 * len(epochs), 3.6))
    for ax, task in zip(list(axes) if len(epochs) > 1 else [axes], epochs):
        rows = _rows(runs, task, epochs[task])
        for r, style in (("sr", "o-"), ("rn", "s--")):
            xs, ms, ss = [], [], []
            for fl in FLS:
                rs = rows.get(f"u{fl}-{r}")
                if rs:
                    m, s = _stats([100 * x["accuracy"] for x in rs])
                    xs.append(fl), ms.append(m), ss.append(s)
            ax.errorbar(xs, ms, yerr=ss, fmt=style, capsize=3, label="stochastic" if r == "sr" else "nearest")
        if "fp32" in rows:
            ax.axhline(statistics.fmean(100 * x["accuracy"] for x in rows["fp32"]), color="k", lw=0.8, label="FP32")
        ax.set_title(f"{task} ({epochs[task]} epochs), <16-FL, FL> everywhere")
        ax.set_xlabel("FL (IL = 16 - FL)")
        ax.set_ylabel("test accuracy %")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", default=",".join(f"{t}={e}" for t, e in EPOCHS.items()),
                    help="task=epochs,... (the tasks to run)")
    ap.add_argument("--settings", default="", help="comma-separated subset of settings (default all)")
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--numerics-every", type=int, default=20)
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--doc", default=str(DOC))
    ap.add_argument("--fresh", action="store_true", help="ignore cached runs in --out")
    args = ap.parse_args()
    epochs = {k: int(v) for k, v in (kv.split("=") for kv in args.epochs.split(","))}
    for t in epochs:
        if t not in TASKS:
            raise SystemExit(f"unknown task {t!r}; valid: {', '.join(TASKS)}")
    out = pathlib.Path(args.out)
    runs = [] if args.fresh or not out.exists() else json.loads(out.read_text())["runs"]
    have = {_key(r) for r in runs}
    only = set(filter(None, args.settings.split(",")))
    todo = [(t, s, seed, e, args.numerics_every) for t, e in epochs.items() for s in setting_names(t)
            if not only or s in only for seed in range(args.seeds)
            if f"{t}|{s}|{seed}|{e}" not in have]
    todo.sort(key=lambda j: (j[2], j[0] != "mnist1d-cnn"))  # seed-major: partial results cover every setting
    t0 = time.perf_counter()
    command = "PYTHONPATH=. python3 scripts/fixed_point_sweep.py " + " ".join(
        a for a in (f"--seeds {args.seeds}" if args.seeds != 3 else "",
                    f"--epochs {args.epochs}" if epochs != EPOCHS else "",
                    f"--jobs {args.jobs}" if args.jobs != 1 else "") if a)

    def save() -> None:
        out.write_text(json.dumps({"command": command, "runs": sorted(runs, key=_key)}, indent=1))

    with mp.get_context("spawn").Pool(args.jobs) if args.jobs > 1 else _Serial() as pool:
        for rec in pool.imap_unordered(_job, todo):
            runs.append(rec)
            save()
            print(f"{rec['task']:12s} {rec['setting']:13s} seed {rec['seed']} "
                  f"acc {100 * (rec['accuracy'] or 0):5.1f}  {rec['wall_s']:.0f}s", flush=True)
    save()
    wall = time.perf_counter() - t0
    plot = PLOT if pathlib.Path(args.doc).resolve() == DOC.resolve() else pathlib.Path(args.doc).with_suffix(".png")
    made = make_plot(runs, epochs, plot)
    text = write_doc(runs, pathlib.Path(args.doc), command, wall, epochs, plot if made else None)
    doc = pathlib.Path(args.doc)
    marker = "<!-- end of generated part -->"
    tail = ""
    if doc.exists() and marker in doc.read_text():
        tail = doc.read_text().split(marker, 1)[1]
    doc.write_text(text + marker + tail)
    print(f"wrote {doc} and {out} in {wall / 60:.1f} min")


class _Serial:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False

    def imap_unordered(self, f, xs):
        return map(f, xs)


if __name__ == "__main__":
    main()
