"""The outputs of ``lowp ptq`` (``lowp.experiments.ptq``): DIR/results.json, DIR/results.md (the table, metrics in
percent and Δ in percentage points) and DIR/ptq.png (test metric against average weight bits and against the
fraction of multiplications replaced), each written atomically."""
from __future__ import annotations

import io as _io
import math
import os
from typing import Any

from . import io


def finite(v: Any) -> Any:
    """NaN/Inf floats become None, recursively (strict JSON)."""
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, dict):
        return {k: finite(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [finite(x) for x in v]
    return v


def _pct(v: float | None, fmt: str = ".2f") -> str:
    return "-" if v is None or not math.isfinite(v) else format(100 * v, fmt)


def results_table(res: dict[str, Any]) -> str:
    """The Markdown table of a PTQ result: the FP32 row, then one row per configuration."""
    name = res.get("metric_name", "metric")
    rows = [f"| configuration | {name} % | Δ vs FP32 (pts) | weight bits | size (bytes) | mults replaced "
            "| agrees with FP32 % |",
            "|---|---|---|---|---|---|---|",
            f"| fp32 | {_pct(res['fp32_metric'])} | +0.00 | 32 | {res['fp32_bytes']} | 0% | 100.00 |"]
    for c in res["configs"]:
        rows.append(f"| {c['label']} | {_pct(c['metric'])} | {_pct(c['metric'] - c['fp32_metric'], '+.2f')} | "
                    f"{c['weight_bits']:.2f} | {c['size_bytes']} | {_pct(c['mult_fraction_replaced'], '.1f')}% | "
                    f"{_pct(c['fp32_agreement'])} |")
    if res.get("exec"):
        rows += ["", f"Real execution (`--exec`), forward pass over the test set, {res['exec'][0]['threads']} "
                 "torch thread(s), median time, same process:", "",
                 f"| execution path | {name} % | Δ vs FP32 (pts) | agrees with FP32 % | time (ms) | speed vs FP32 |",
                 "|---|---|---|---|---|---|"]
        for e in res["exec"]:
            rows.append(f"| {e['label']} | {_pct(e['metric'])} | {_pct(e['metric'] - res['fp32_metric'], '+.2f')} | "
                        f"{_pct(e['fp32_agreement'])} | {1e3 * e['time_s']:.2f} (FP32 {1e3 * e['fp32_time_s']:.2f}) "
                        f"| {e['speedup']:.2f}× |")
    return "\n".join(rows)


def ptq_plot(res: dict[str, Any]) -> bytes:
    """ptq.png: the test metric (percent) of every configuration against its average weight bits and against the
    fraction of multiplications replaced, with the FP32 metric as a dashed line."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    name = res.get("metric_name", "metric")
    fig, axs = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, xl in ((axs[0], "weight_bits", "weight bits (average)"),
                        (axs[1], "mult_fraction_replaced", "fraction of multiplications replaced")):
        for c in res["configs"]:
            ax.scatter(c[key], 100 * c["metric"])
            ax.annotate(c["label"], (c[key], 100 * c["metric"]), fontsize=7)
        ax.axhline(100 * res["fp32_metric"], color="k", ls="--", lw=1, label="FP32")
        ax.set_xlabel(xl)
        ax.set_ylabel(f"test {name} (%)")
        ax.legend()
    fig.suptitle(f"{res['task']}: {res['method']}")
    fig.tight_layout()
    buf = _io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def write_outputs(out: str, res: dict[str, Any]) -> str:
    """results.json, results.md and ptq.png, each written atomically (temporary file, then rename); returns the
    table."""
    io.atomic_write_json(os.path.join(out, "results.json"), finite(res))
    table = results_table(res)
    io.atomic_write_text(os.path.join(out, "results.md"), f"# lowp ptq: {res['task']}, method {res['method']}\n\n"
                                                          f"{table}\n")
    io.atomic_write_bytes(os.path.join(out, "ptq.png"), ptq_plot(res))
    return table
