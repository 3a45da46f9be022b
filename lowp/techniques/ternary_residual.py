"""Ternary residual networks (Kundu et al. 2017): Ŵ = Σ_{j<r} α_j·T_j, where term j is the FGQ ternarization
(``lowp.techniques.fgq.fgq_weight``, i.e. ``lowp.formats.TernaryFormat``) of the residual W − Σ_{i<j} α_i·T_i.
With the exact per-group optimum each term minimises ||R − α·T||² over α ≥ 0 and T (T = 0 included), so the error
||W − Ŵ||² never increases with r (it strictly decreases while the residual is non-zero).

Residual edges are added greedily where they matter most ("sensitive" units). A unit is a block of ``block``
output filters of a layer (None: the whole layer). Sensitivity is measured by the layer-output error it causes on
calibration inputs X (a first-order perturbation proxy): for a residual R of the unit's rows,
e = ||X Rᵀ||² = Σ_rows R G Rᵀ with G = XᵀX, normalised by the layer's output energy ||X Wᵀ||². Each step adds one
term to the unit with the largest error reduction per added byte, until the size budget ``budget_bytes`` is spent
or the summed normalised error falls to ``max_error`` (or every unit has ``max_terms``). Without a budget every
unit gets ``terms`` terms.

Size of a unit per term: 2 bits per weight plus one FP32 α per group of ``group``; multiplications per output:
⌈K/N⌉ per term.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Iterable

import torch
from torch import nn

from ..formats.ternary import METHODS
from .calibration import check_method
from .fgq import fgq_weight
from .ptq import fold_batchnorm, int_weight_fn, layer_order, quantize_model


@dataclasses.dataclass(frozen=True)
class ResidualConfig:
    group: int = 64
    method: str = "optimal"
    terms: int = 1
    max_terms: int = 4
    budget_bytes: int | None = None
    max_error: float | None = None
    block: int | None = None
    act_bits: int | None = 8
    calibration: str = "minmax"
    edge_bits: int | None = 8
    fold_bn: bool = True

    def __post_init__(self) -> None:
        for n in ("group", "terms", "max_terms"):
            v = getattr(self, n)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"ternary residual {n} must be a positive int, got {v!r}")
        if self.terms > self.max_terms:
            raise ValueError(f"terms ({self.terms}) must not exceed max_terms ({self.max_terms})")
        if self.method not in METHODS:
            raise ValueError(f"unknown ternary method {self.method!r}; valid: {', '.join(METHODS)}")
        if self.block is not None and (not isinstance(self.block, int) or self.block < 1):
            raise ValueError(f"block must be None or a positive int, got {self.block!r}")
        check_method(self.calibration)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ResidualConfig":
        return cls(**d)


def residual_terms(w: torch.Tensor, terms: int, group: int, method: str = "optimal") -> list[torch.Tensor]:
    """The ``terms`` ternary terms α_j·T_j (each in w's shape) of w's residual expansion."""
    out, r = [], w.detach().clone()
    for _ in range(terms):
        t = fgq_weight(r, group, method)
        out.append(t)
        r = r - t
    return out


def residual_expand(w: torch.Tensor, terms: int, group: int, method: str = "optimal") -> torch.Tensor:
    """Ŵ = Σ_{j<terms} α_j·T_j."""
    return torch.stack(residual_terms(w, terms, group, method)).sum(0)


def residual_weight(terms: list[torch.Tensor], rows_terms: torch.Tensor) -> torch.Tensor:
    """Ŵ with row i (output filter i) using its first rows_terms[i] terms."""
    t = torch.stack(terms)  # (R, out, ...)
    j = torch.arange(len(terms), device=t.device).reshape(-1, 1)
    mask = (j < rows_terms.to(t.device).reshape(1, -1)).to(t.dtype).reshape(len(terms), -1, *([1] * (t.dim() - 2)))
    return (t * mask).sum(0)


def _layer_inputs(model: nn.Module, names: list[str], batches: list[torch.Tensor], max_rows: int = 4096):
    """Gram matrices G = XᵀX of each layer's input rows (unfolded patches for convolutions)."""
    grams: dict[str, torch.Tensor] = {}

    def hook(name):
        def f(mod, inp):
            x = inp[0].detach().double()
            if isinstance(mod, nn.Linear):
                rows = x.reshape(-1, x.shape[-1])
            elif mod.groups != 1 or not isinstance(mod.padding, tuple) or isinstance(mod.padding, str):
                return
            else:
                x4 = x if isinstance(mod, nn.Conv2d) else x.unsqueeze(2)
                ks = mod.kernel_size if isinstance(mod, nn.Conv2d) else (1, mod.kernel_size[0])
                pad = mod.padding if isinstance(mod, nn.Conv2d) else (0, mod.padding[0])
                st = mod.stride if isinstance(mod, nn.Conv2d) else (1, mod.stride[0])
                dl = mod.dilation if isinstance(mod, nn.Conv2d) else (1, mod.dilation[0])
                cols = nn.functional.unfold(x4, ks, dilation=dl, padding=pad, stride=st)  # (B, C*kh*kw, L)
                rows = cols.transpose(1, 2).reshape(-1, cols.shape[1])
            if rows.shape[0] > max_rows:
                rows = rows[torch.linspace(0, rows.shape[0] - 1, max_rows).long()]
            g = rows.T @ rows
            grams[name] = grams.get(name, 0) + g
        return f

    hs = [model.get_submodule(n).register_forward_pre_hook(hook(n)) for n in names]
    try:
        with torch.no_grad():
            for b in batches:
                model(b)
    finally:
        for h in hs:
            h.remove()
    return grams


def _row_errors(w: torch.Tensor, terms: list[torch.Tensor], g: torch.Tensor | None) -> torch.Tensor:
    """(R+1, out) output errors per row after r = 0..R terms."""
    flat = w.detach().reshape(w.shape[0], -1).double()
    res, errs = flat.clone(), []
    for r in range(len(terms) + 1):
        errs.append(((res @ g) * res).sum(1) if g is not None else (res * res).sum(1))
        if r < len(terms):
            res = res - terms[r].reshape(flat.shape).double()
    return torch.stack(errs)


@dataclasses.dataclass
class _Layer:
    name: str
    terms: list[torch.Tensor]
    errs: torch.Tensor  # (R+1, out)
    energy: float
    rows_terms: torch.Tensor
    k: int
    group: int

    def bytes_per_term_row(self) -> float:
        return 2 * self.k / 8 + 4 * math.ceil(self.k / self.group)


def allocate(layers: list[_Layer], config: ResidualConfig) -> None:
    """Greedy allocation of residual terms to units (in place on rows_terms), see the module docstring."""
    units = []  # (layer, row slice)
    for L in layers:
        out = L.rows_terms.numel()
        b = config.block or out
        units += [(L, slice(s, min(s + b, out))) for s in range(0, out, b)]
    if config.budget_bytes is None and config.max_error is None:
        return
    size = sum(float(L.rows_terms.sum()) * L.bytes_per_term_row() for L in layers)
    err = sum(float(L.errs.gather(0, L.rows_terms.reshape(1, -1)).sum()) / L.energy for L in layers)
    while True:
        if config.max_error is not None and err <= config.max_error:
            return
        best, best_gain = None, 0.0
        for L, sl in units:
            r = L.rows_terms[sl]
            if int(r.max()) >= config.max_terms:
                continue
            rows = torch.arange(sl.start, sl.stop)
            de = float((L.errs[r, rows] - L.errs[r + 1, rows]).sum()) / L.energy
            cost = (sl.stop - sl.start) * L.bytes_per_term_row()
            if config.budget_bytes is not None and size + cost > config.budget_bytes:
                continue
            if de / cost > best_gain:
                best, best_gain = (L, sl, de, cost), de / cost
        if best is None:
            return
        L, sl, de, cost = best
        L.rows_terms[sl] += 1
        size += cost
        err -= de


def ternary_residual(model: nn.Module, calib_data: Iterable[torch.Tensor],
                     config: ResidualConfig = ResidualConfig()) -> nn.Module:
    """A copy of ``model`` with ternary-residual weights (terms allocated as configured) and calibrated activations.
    The allocation is recorded per layer in ``info['rows_terms']`` of each quantized layer."""
    batches = [b if isinstance(b, torch.Tensor) else b[0] for b in calib_data]
    if not batches:
        raise ValueError("calibration data is empty")
    import copy
    base = copy.deepcopy(model).eval()
    if config.fold_bn:
        fold_batchnorm(base)
    order = layer_order(base, batches[0][:2])
    edge = config.edge_bits is not None
    inner = [n for i, n in enumerate(order) if not (edge and i in (0, len(order) - 1))]
    grams = _layer_inputs(base, inner, batches[:4])
    layers: dict[str, _Layer] = {}
    for n in inner:
        w = base.get_submodule(n).weight
        ts = residual_terms(w, config.max_terms, config.group, config.method)
        g = grams.get(n)
        errs = _row_errors(w, ts, g)
        energy = float(errs[0].sum()) or 1.0
        layers[n] = _Layer(n, ts, errs, energy, torch.full((w.shape[0],), config.terms, dtype=torch.long),
                           w[0].numel(), config.group)
    allocate(list(layers.values()), config)

    def fn(name: str, mod: nn.Module):
        L = layers[name]
        wq = residual_weight(L.terms, L.rows_terms)
        nterm_rows = int(L.rows_terms.sum())
        avg = nterm_rows / L.rows_terms.numel()
        bb = 4 * mod.bias.numel() if mod.bias is not None else 0
        return wq, {"method": "ternary-residual", "weight_bits": 2 * avg, "weights": mod.weight.numel(),
                    "size_bytes": int(math.ceil(nterm_rows * 2 * L.k / 8) + 4 * nterm_rows * math.ceil(L.k / L.group)) + bb,
                    "mults_per_mac": avg * math.ceil(L.k / L.group) / L.k, "terms": avg,
                    "rows_terms": L.rows_terms.tolist()}

    return quantize_model(base, fn, batches, act_bits=config.act_bits, calibration=config.calibration,
                          fold_bn=False, edge_fn=int_weight_fn(config.edge_bits) if edge else None,
                          edge_layers=(edge, edge))
