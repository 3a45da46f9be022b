"""The report's hardware section: a roofline *estimate* of what each recipe would buy on real accelerators, and the
exact storage and traffic bytes it implies (``hwcost.py``), from the model shapes stored in results.json. The
hardware presets of lowp (h100-fp8, b200-mxfp8, b200-nvfp4, mi300-fp8) are added as rows even when the comparison
did not train them (marked "not trained")."""
from __future__ import annotations

import html

from .hwcost import HARDWARE, STORAGE_LABELS, estimate, fmt_bytes, storage


def _specs(comp) -> list[tuple[str, dict, bool]]:
    """(label, recipe spec, trained) for the comparison's recipes, then the hardware presets it lacks."""
    out = [(name, comp.runs_of(name)[0].recipe_spec or {}, True) for name in comp.recipes]
    have = set(comp.recipes)
    from ..recipes import get_recipe

    for hw in HARDWARE.values():
        for preset in hw.presets:
            if preset not in have:
                have.add(preset)
                try:
                    out.append((preset, get_recipe(preset).to_dict(), False))
                except ValueError:  # pragma: no cover - a library without the preset
                    continue
    return out


def estimate_rows(comp) -> list[dict]:
    """One dict per recipe: label, trained, per hardware {x_bf16, x_fp32, step_s}, and the storage bytes."""
    model = getattr(comp, "model", None)
    if not model:
        return []
    rows = []
    for label, spec, trained in _specs(comp):
        try:
            est, sto = estimate(model, spec), storage(model, spec)
        except (KeyError, ValueError, TypeError):  # a spec lowp cannot read (another version): left out
            continue
        rows.append({"recipe": label, "trained": trained, "estimate": est, "storage": sto})
    return rows


def hardware_section(comp) -> list[str]:
    rows = estimate_rows(comp)
    if not rows:
        return ["<h2>Estimate: what the recipe would buy on hardware</h2><p>No model shapes in results.json "
                "(the model's GEMMs could not be traced): no estimate.</p>"]
    e = html.escape
    model = comp.model
    hws = list(HARDWARE)
    head = "".join(f"<th>{e(h)} × BF16</th><th>{e(h)} × FP32</th>" for h in hws)
    body = []
    for r in rows:
        cells = "".join(f"<td>{r['estimate'][h]['x_bf16']:.2f}</td><td>{r['estimate'][h]['x_fp32']:.2f}</td>"
                        for h in hws)
        label = e(r["recipe"]) + ("" if r["trained"] else " <i>(preset, not trained)</i>")
        body.append(f"<tr><td>{label}</td>{cells}</tr>")
    sto_keys = list(STORAGE_LABELS)
    sto_head = "".join(f"<th>{e(STORAGE_LABELS[k])}</th>" for k in sto_keys)
    sto_body = "".join(
        f"<tr><td>{e(r['recipe'])}</td>" + "".join(f"<td>{e(fmt_bytes(r['storage'][k]))}</td>" for k in sto_keys)
        + "</tr>" for r in rows)
    sources = "; ".join(f"{e(h.name)}: {e(h.source)}" for h in HARDWARE.values())
    n_gemm = len(model["gemms"])
    return [
        "<h2>Estimate: what the recipe would buy on hardware</h2>",
        "<p><b>An estimate, not a measurement.</b> Roofline time of the training step's GEMMs (forward, dgrad, "
        f"wgrad of the model's {n_gemm} Linear/Conv layers on one batch of {model['batch_size']}) from datasheet "
        "dense peak FLOP/s per format and memory bandwidth, with each tensor in the recipe's format (a role the "
        "recipe leaves unset counts as FP32), as a ratio to the same step with every tensor in BF16 (× BF16) and "
        "in FP32 (× FP32) on the same hardware; below 1 is faster. Left out: attention products, non-GEMM ops, "
        "quantization kernels, achieved vs. peak rates. At the sizes of these small models most GEMMs are "
        f"memory-bound, so narrower outputs matter as much as narrower inputs. Peaks from: {sources} (cited in "
        "lowp/analysis/roofline.py).</p>",
        f"<table id='estimate'><thead><tr><th>recipe</th>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>",
        "<h3>Storage and traffic per training step (exact, from the shapes and formats)</h3>",
        f"<p>{model['params']} parameters; batch of {model['batch_size']}; bytes include block scales. Activations "
        "saved for backward: each layer's GEMM input in the format its wgrad GEMM reads. Gradient payload: what one "
        "data-parallel all-reduce carries per step (a ring all-reduce moves about twice that per process).</p>",
        f"<table id='storage'><thead><tr><th>recipe</th>{sto_head}</tr></thead><tbody>{sto_body}</tbody></table>",
    ]
