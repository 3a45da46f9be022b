"""Post-training quantization : a model transform that replaces each Linear/Conv layer by a fake-quantized
twin, with activation ranges calibrated on a calibration subset through forward hooks.

INT8 PTQ (``ptq_int8``): weights symmetric or asymmetric, per tensor or per output channel, from min/max;
layer inputs per tensor, calibrated by min-max, percentile or entropy (``calibration``); BatchNorm folded into the
preceding Conv/Linear first: W' = W·γ/√(var+ε) per output channel, b' = (b − mean)·γ/√(var+ε) + β.
First/last layer (in execution order) can stay FP32.

The same wrapper serves every weight quantizer of lowp.techniques (FGQ, cluster, ternary residual): they pass a
``weight_fn(name, module) -> (quantized weight, info)`` to ``quantize_model``.
"""
from __future__ import annotations

import copy
import dataclasses
from typing import Any, Callable, Iterable

import torch
from torch import nn

from ..formats import IntFormat
from ..formats.ternary import METHODS as TERNARY_METHODS
from ..ops.modules import GEMM_TYPES
from .calibration import Observer, QParams, check_method, fake_quant, qparams

GRANULARITIES = ("channel", "tensor")


class DictConfig:
    """``to_dict`` / ``from_dict`` of the frozen config dataclasses of the PTQ techniques."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]):
        return cls(**d)


def check_act_bits(act_bits: Any) -> None:
    if act_bits is not None and (isinstance(act_bits, bool) or not isinstance(act_bits, int)
                                 or not 2 <= act_bits <= 16):
        raise ValueError(f"act_bits must be None or an int in 2..16, got {act_bits!r}")


def check_ternary_options(what: str, size: Any, method: str, act_bits: Any, calibration: str) -> None:
    """The checks the ternary PTQ configs share (FGQ, cluster): ``size`` (named ``what``) a positive int, a ternary
    method, activation bits, a calibration method."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"{what} must be a positive int, got {size!r}")
    if method not in TERNARY_METHODS:
        raise ValueError(f"unknown ternary method {method!r}; valid: {', '.join(TERNARY_METHODS)}")
    check_act_bits(act_bits)
    check_method(calibration)


@dataclasses.dataclass(frozen=True)
class PTQConfig(DictConfig):
    """INT8 (or other bit width) post-training quantization settings."""

    weight_bits: int = 8
    weight_granularity: str = "channel"
    weight_symmetric: bool = True
    act_bits: int | None = 8
    act_symmetric: bool = True
    calibration: str = "minmax"
    percentile: float = 99.99
    fold_bn: bool = True
    skip_first: bool = False
    skip_last: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.weight_bits, bool) or not isinstance(self.weight_bits, int) or not 2 <= self.weight_bits <= 16:
            raise ValueError(f"weight_bits must be an int in 2..16, got {self.weight_bits!r}")
        check_act_bits(self.act_bits)
        if self.weight_granularity not in GRANULARITIES:
            raise ValueError(f"unknown weight granularity {self.weight_granularity!r}; valid: {', '.join(GRANULARITIES)}")
        check_method(self.calibration)


# ----------------------------------------------------------------------------------------------------------------
# weights

def quantize_weight_int(w: torch.Tensor, bits: int, granularity: str = "channel",
                        symmetric: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Fake-quantize a weight (out, ...) to ``bits``-bit integers; returns (dequantized weight, scale of shape
    (out, 1) or ()). Symmetric uses ``IntFormat(bits).quantize_with_scale``; asymmetric an affine min/max grid."""
    flat = w.detach().reshape(w.shape[0], -1)
    if symmetric:
        fmt = IntFormat(bits, axis=1 if granularity == "channel" else None)  # IntFormat's axis: the one reduced over
        s = fmt.scale_for(flat)
        s = s[:, :1] if granularity == "channel" else s.reshape(())
        return fmt.quantize_with_scale(flat, s.double()).reshape(w.shape), s
    if granularity == "channel":
        lo, hi = flat.amin(dim=1, keepdim=True), flat.amax(dim=1, keepdim=True)
    else:
        lo, hi = flat.amin().reshape(1, 1).expand(flat.shape[0], 1), flat.amax().reshape(1, 1).expand(flat.shape[0], 1)
    out = torch.empty_like(flat)
    scales = torch.empty(flat.shape[0], 1, device=flat.device)
    for i in range(flat.shape[0]) if granularity == "channel" else [None]:
        rows = slice(None) if i is None else slice(i, i + 1)
        qp = qparams(float(lo[0 if i is None else i]), float(hi[0 if i is None else i]), bits, symmetric=False)
        out[rows] = fake_quant(flat[rows], qp)
        scales[rows] = qp.scale
    return out.reshape(w.shape), scales if granularity == "channel" else scales[0, 0]


# ----------------------------------------------------------------------------------------------------------------
# BatchNorm folding

def _fold_pair(layer: nn.Module, bn: nn.modules.batchnorm._BatchNorm) -> None:
    with torch.no_grad():
        std = torch.sqrt(bn.running_var + bn.eps)
        g = bn.weight if bn.affine else torch.ones_like(std)
        b = bn.bias if bn.affine else torch.zeros_like(std)
        f = g / std
        layer.weight.mul_(f.reshape(-1, *([1] * (layer.weight.dim() - 1))))
        old_b = layer.bias if layer.bias is not None else torch.zeros_like(std)
        new_b = (old_b - bn.running_mean) * f + b
        if layer.bias is None:
            layer.bias = nn.Parameter(new_b)
        else:
            layer.bias.copy_(new_b)


def _set_module(root: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, leaf, new)


def fold_batchnorm(model: nn.Module) -> list[tuple[str, str]]:
    """Fold every BatchNorm that directly consumes a Conv/Linear output (and nothing else does) into that layer,
    in place, replacing the BN by Identity. Patterns are found with torch.fx; if tracing fails, adjacent pairs in
    nn.Sequential containers are folded. Returns the folded (layer, bn) names."""
    pairs: list[tuple[str, str]] = []
    try:
        gm = torch.fx.symbolic_trace(model)
        mods = dict(model.named_modules())
        for node in gm.graph.nodes:
            if node.op == "call_module" and isinstance(mods.get(node.target), nn.modules.batchnorm._BatchNorm):
                src = node.args[0]
                if (isinstance(src, torch.fx.Node) and src.op == "call_module"
                        and isinstance(mods.get(src.target), GEMM_TYPES) and len(src.users) == 1):
                    pairs.append((src.target, node.target))
    except Exception:  # noqa: BLE001 - untraceable model: fall back to Sequential adjacency
        for pname, parent in model.named_modules():
            if isinstance(parent, nn.Sequential):
                kids = list(parent.named_children())
                for (n1, m1), (n2, m2) in zip(kids, kids[1:]):
                    if isinstance(m1, GEMM_TYPES) and isinstance(m2, nn.modules.batchnorm._BatchNorm):
                        pre = f"{pname}." if pname else ""
                        pairs.append((pre + n1, pre + n2))
    for lname, bname in pairs:
        bn = model.get_submodule(bname)
        if bn.running_mean is None:
            continue
        _fold_pair(model.get_submodule(lname), bn)
        _set_module(model, bname, nn.Identity())
    return pairs


# ----------------------------------------------------------------------------------------------------------------
# the wrapper

class QuantizedLayer(nn.Module):
    """A Linear/Conv layer computing with a fixed quantized weight ``weight_q`` and (after calibration)
    fake-quantized input. ``info`` records what the weight quantizer reported (bits, size, multiplications)."""

    def __init__(self, inner: nn.Module, weight_q: torch.Tensor, info: dict[str, Any], act_bits: int | None,
                 act_symmetric: bool = True, weight_scale: torch.Tensor | None = None) -> None:
        super().__init__()
        self.inner = inner
        self.register_buffer("weight_q", weight_q.detach().clone())
        self.register_buffer("weight_scale", None if weight_scale is None else weight_scale.detach().clone())
        self.info = dict(info)
        self.act_bits = act_bits
        self.act_symmetric = act_symmetric
        self.act_qparams: QParams | None = None
        self.observer: Observer | None = None
        self.out_positions = 1  # output positions per sample (conv spatial size), recorded during calibration

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.observer is not None:
            self.observer.observe(x)
        if self.act_qparams is not None:
            x = fake_quant(x, self.act_qparams)
        if isinstance(self.inner, nn.Linear):
            y = nn.functional.linear(x, self.weight_q, self.inner.bias)
        else:
            y = self.inner._conv_forward(x, self.weight_q, self.inner.bias)
        if self.observer is not None:
            self.out_positions = int(y[0].numel() // y.shape[1]) if y.dim() > 2 else 1
        return y

    @property
    def macs_per_sample(self) -> int:
        """Multiply-accumulates per sample: out_features/out_channels x K x output positions."""
        w = self.inner.weight
        return int(w.numel() * self.out_positions)

    def extra_repr(self) -> str:
        return f"{self.info.get('method', '?')}, act_bits={self.act_bits}"


def layer_order(model: nn.Module, example: torch.Tensor) -> list[str]:
    """Names of the Linear/Conv layers in the order a forward pass on ``example`` calls them."""
    order: list[str] = []
    hooks = [m.register_forward_pre_hook(lambda mod, inp, n=n: order.append(n) if n not in order else None)
             for n, m in model.named_modules() if isinstance(m, GEMM_TYPES)]
    try:
        with torch.no_grad():
            model(example)
    finally:
        for h in hooks:
            h.remove()
    return order


WeightFn = Callable[[str, nn.Module], tuple[torch.Tensor, dict[str, Any]]]


def quantize_model(
    model: nn.Module,
    weight_fn: WeightFn,
    calib_data: Iterable[torch.Tensor],
    *,
    act_bits: int | None = 8,
    act_symmetric: bool = True,
    calibration: str = "minmax",
    percentile: float = 99.99,
    fold_bn: bool = True,
    skip: Callable[[str, int, int], bool] | None = None,
    edge_fn: WeightFn | None = None,
    edge_layers: tuple[bool, bool] = (False, False),
) -> nn.Module:
    """Return a quantized copy of ``model`` (eval mode): fold BN, wrap each Linear/Conv (``skip(name, index, count)``
    true: left FP32; first/last layer with ``edge_layers`` set: quantized by ``edge_fn`` instead of ``weight_fn``),
    then run ``calib_data`` (an iterable of input batches) through it, observing each wrapped layer's input, and
    fix the activation grids."""
    check_method(calibration)
    model = copy.deepcopy(model).eval()
    batches = [b if isinstance(b, torch.Tensor) else b[0] for b in calib_data]
    if not batches:
        raise ValueError("calibration data is empty")
    if fold_bn:
        fold_batchnorm(model)
    order = layer_order(model, batches[0][:2])
    wrapped: list[QuantizedLayer] = []
    for i, name in enumerate(order):
        mod = model.get_submodule(name)
        if skip is not None and skip(name, i, len(order)):
            wq, info, bits = mod.weight.detach(), fp32_info(mod), None  # kept FP32, counted in the statistics
        else:
            edge = (i == 0 and edge_layers[0]) or (i == len(order) - 1 and edge_layers[1])
            fn = edge_fn if (edge and edge_fn is not None) else weight_fn
            (wq, info), bits = fn(name, mod), act_bits
        info = {**info, "name": name}
        q = QuantizedLayer(mod, wq, info, bits, act_symmetric, info.pop("weight_scale", None))
        _set_module(model, name, q)
        wrapped.append(q)
    for q in wrapped:
        q.observer = Observer()
    with torch.no_grad():
        for b in batches:
            model(b)
    for q in wrapped:
        if q.act_bits is not None:
            q.act_qparams = q.observer.qparams(calibration, q.act_bits, act_symmetric, percentile)
        q.observer = None
    return model


def quantized_layers(model: nn.Module) -> list[tuple[str, QuantizedLayer]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, QuantizedLayer)]


def int_weight_fn(bits: int, granularity: str = "channel", symmetric: bool = True) -> WeightFn:
    """Weight quantizer for ``quantize_model``: ``bits``-bit integers (see ``quantize_weight_int``)."""
    def fn(name: str, mod: nn.Module):
        wq, s = quantize_weight_int(mod.weight, bits, granularity, symmetric)
        n = mod.weight.numel()
        nscale = s.numel()
        return wq, {"method": f"int{bits}", "weight_bits": bits, "weights": n,
                    "size_bytes": (n * bits + 7) // 8 + 4 * nscale + _bias_bytes(mod),
                    "mults_per_mac": 1.0, "weight_scale": s if symmetric else None}
    return fn


def fp32_info(mod: nn.Module) -> dict[str, Any]:
    """``info`` of a layer left in FP32."""
    n = mod.weight.numel()
    return {"method": "fp32", "weight_bits": 32, "weights": n, "size_bytes": 4 * n + _bias_bytes(mod),
            "mults_per_mac": 1.0}


def _bias_bytes(mod: nn.Module) -> int:
    return 4 * mod.bias.numel() if getattr(mod, "bias", None) is not None else 0


def ptq_int8(model: nn.Module, calib_data: Iterable[torch.Tensor], config: PTQConfig = PTQConfig()) -> nn.Module:
    """INT8 (``config.weight_bits``) post-training quantization of ``model``; returns a fake-quantized copy."""
    def skip(name: str, i: int, n: int) -> bool:
        return (config.skip_first and i == 0) or (config.skip_last and i == n - 1)

    return quantize_model(model, int_weight_fn(config.weight_bits, config.weight_granularity, config.weight_symmetric),
                          calib_data, act_bits=config.act_bits, act_symmetric=config.act_symmetric,
                          calibration=config.calibration, percentile=config.percentile, fold_bn=config.fold_bn,
                          skip=skip)


def model_stats(model: nn.Module) -> dict[str, float]:
    """Size and multiplication counts of a model returned by ``quantize_model``: size_bytes (quantized layers as
    reported by their weight quantizer, every other parameter FP32), fp32_bytes, macs, mults (multiplications left
    after ternary/grouped layers replace the rest by additions), mult_fraction_replaced, weight_bits (average over
    the weights of the quantized layers)."""
    q_params = set()
    size = 0
    macs = mults = 0.0
    wbits_num = wbits_den = 0.0
    for _, q in quantized_layers(model):
        q_params.update(id(p) for p in q.inner.parameters())
        size += q.info["size_bytes"]
        m = q.macs_per_sample
        macs += m
        mults += m * q.info.get("mults_per_mac", 1.0)
        wbits_num += q.info["weight_bits"] * q.info["weights"]
        wbits_den += q.info["weights"]
    fp32 = 0
    for p in model.parameters():
        fp32 += 4 * p.numel()
        if id(p) not in q_params:
            size += 4 * p.numel()
    return {"size_bytes": int(size), "fp32_bytes": int(fp32), "macs": macs, "mults": mults,
            "mult_fraction_replaced": 1.0 - mults / macs if macs else 0.0,
            "weight_bits": wbits_num / wbits_den if wbits_den else 32.0}
