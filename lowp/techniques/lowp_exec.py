"""Real low-precision execution on the CPU, and saving/loading quantized models with packed integer weights.

- BF16: ``to_bf16(model)`` runs every Linear/Conv in bfloat16 on oneDNN (avx512_bf16 where the CPU has it), inputs
  cast on entry and the output cast back to float32.
- INT8: ``Int8Linear`` holds int8 weights q_w with one FP32 scale s_w per output channel (symmetric,
  s_w = amax/127) and quantizes its input per tensor on the fly (dynamic: s_x = amax/127, or a calibrated static
  scale); the GEMM is ``torch._int_mm`` (int8 × int8 → int32, VNNI) and y = (q_x q_wᵀ)·s_x·s_w + b.
  torch._int_mm wants K, N multiples of 8 (and M > 16 on CUDA): K and N are zero-padded (zeros add nothing);
  for M = 1 the weight is passed column-major, the layout oneDNN runs fastest for matrix-vector products.
  The result equals the fake-quantized reference F.linear(fq(x), fq(W)) up to float32 rounding of the dequantisation.
- ``dynamic_int8(model)``: torch.ao's dynamic quantized Linear (fbgemm), as an alternative kernel.
- ``save_packed(model, path)`` / ``load_packed(path, template)``: int8 weights and FP32 scales are stored as int8 /
  float32 tensors with ``torch.save``; everything else as the FP32 state dict. Reload is bit-identical.
"""
from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from ..formats import IntFormat
from .calibration import QParams
from .ptq import QuantizedLayer

PACKED_FORMAT = "lowp-packed-int8-v1"


def _pad_to(t: torch.Tensor, dim: int, mult: int, minimum: int = 0) -> torch.Tensor:
    n = t.shape[dim]
    target = max(minimum, -(-n // mult) * mult)
    if target == n:
        return t
    pad = [0, 0] * (t.dim() - 1 - dim % t.dim()) + [0, target - n]
    return nn.functional.pad(t, pad)


def _int_mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """torch._int_mm; where a build rejects M <= 16 (CUDA does), pad the rows of ``a`` to 17 and retry."""
    try:
        return torch._int_mm(a, b)
    except RuntimeError:
        return torch._int_mm(_pad_to(a, 0, 8, 17), b)[: a.shape[0]]


def int8_matmul(qx: torch.Tensor, qw_t: torch.Tensor) -> torch.Tensor:
    """int32 product of int8 (M, K) and int8 (K, N) with ``torch._int_mm``, padding K and N to multiples of 8."""
    m, n = qx.shape[0], qw_t.shape[1]
    a = _pad_to(qx, 1, 8)
    b = _pad_to(_pad_to(qw_t, 0, 8), 1, 8)
    return _int_mm(a, b)[:m, :n]


def quantize_per_channel_int8(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(int8 weight, FP32 per-output-channel scale (out,)) with IntFormat(8)'s scale and nearest-even rounding."""
    w2 = w.detach().float().reshape(w.shape[0], -1)
    s = IntFormat(8, axis=1).scale_for(w2)[:, 0]
    q = torch.clamp(torch.round(w2.double() / s.double().unsqueeze(1)), -127, 127).to(torch.int8)
    return q.reshape(w.shape), s


class Int8Linear(nn.Module):
    """Linear layer executed with int8 weights and activations on torch._int_mm (see the module docstring)."""

    def __init__(self, qweight: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None,
                 act_scale: float | None = None) -> None:
        super().__init__()
        if qweight.dtype != torch.int8 or qweight.dim() != 2:
            raise ValueError(f"Int8Linear needs a 2-D int8 weight, got {qweight.dtype} of shape {tuple(qweight.shape)}")
        self.register_buffer("qweight", qweight.contiguous().clone())
        self.register_buffer("scale", scale.detach().float().contiguous().clone())  # own storage: saves small
        self.register_buffer("bias", None if bias is None else bias.detach().float().clone())
        self.register_buffer("act_scale", None if act_scale is None else torch.tensor(float(act_scale)))
        # K- and N-padded copies for _int_mm (not saved): (N, K) row-major, whose .t() is the column-major B that
        # oneDNN runs fastest for M = 1 (≈5x here), and its (K, N) row-major transpose, fastest for M > 1
        self._qw = _pad_to(_pad_to(self.qweight, 0, 8), 1, 8).contiguous()
        self._qw_t = self._qw.t().contiguous()

    def _apply(self, fn, *args, **kwargs):
        """``.to(device)`` / ``.cuda()`` move the padded copies (plain attributes, not buffers) with the buffers."""
        super()._apply(fn, *args, **kwargs)
        self._qw, self._qw_t = fn(self._qw), fn(self._qw_t)
        return self

    @classmethod
    def from_linear(cls, lin: nn.Linear, act_scale: float | None = None) -> "Int8Linear":
        q, s = quantize_per_channel_int8(lin.weight)
        return cls(q, s, lin.bias, act_scale)

    def quantize_input(self, x2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.act_scale is not None:
            sx = self.act_scale.float()
        else:
            a = x2.abs().amax()
            sx = torch.where(a > 0, a / 127, torch.ones_like(a))
        qx = torch.clamp(torch.round(x2 / sx), -127, 127).to(torch.int8)
        return qx, sx

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x2 = x.reshape(-1, shape[-1]).float()
        qx, sx = self.quantize_input(x2)
        m, n = x2.shape[0], self.qweight.shape[0]
        a = _pad_to(qx, 1, 8)
        acc = _int_mm(a, self._qw.t() if m == 1 else self._qw_t)[:m, :n]
        y = acc.float() * (sx * self.scale)
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*shape[:-1], n)

    def extra_repr(self) -> str:
        return f"in={self.qweight.shape[1]}, out={self.qweight.shape[0]}, static={self.act_scale is not None}"


def _set(root: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, leaf, new)


def to_int8(model: nn.Module, static: bool = True) -> nn.Module:
    """A copy of ``model`` with every nn.Linear (and every INT8-quantized ``QuantizedLayer`` over a Linear, using its
    calibrated symmetric input scale when ``static``) replaced by ``Int8Linear``. Convolutions stay as they are."""
    model = copy.deepcopy(model).eval()
    for name, mod in list(model.named_modules()):
        if isinstance(mod, QuantizedLayer) and isinstance(mod.inner, nn.Linear):
            qp: QParams | None = mod.act_qparams
            sc = qp.scale if (static and qp is not None and qp.symmetric and qp.qmax == 127) else None
            _set(model, name, Int8Linear.from_linear(_as_linear(mod.inner, mod.weight_q), sc))
        elif isinstance(mod, nn.Linear) and not _inside_quantized(model, name):
            _set(model, name, Int8Linear.from_linear(mod))
    return model


def _as_linear(lin: nn.Linear, w: torch.Tensor) -> nn.Linear:
    new = nn.Linear(lin.in_features, lin.out_features, bias=lin.bias is not None)
    with torch.no_grad():
        new.weight.copy_(w)
        if lin.bias is not None:
            new.bias.copy_(lin.bias)
    return new


def _inside_quantized(model: nn.Module, name: str) -> bool:
    parts = name.split(".")
    for i in range(1, len(parts)):
        if isinstance(model.get_submodule(".".join(parts[:i])), QuantizedLayer):
            return True
    return False


class _BF16(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner.to(torch.bfloat16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x.to(torch.bfloat16)).float()


def to_bf16(model: nn.Module) -> nn.Module:
    """A copy of ``model`` computing in bfloat16 (weights and activations), float32 in and out."""
    return _BF16(copy.deepcopy(model).eval())


def dynamic_int8(model: nn.Module) -> nn.Module:
    """torch.ao dynamic quantized Linear layers (int8 weights per tensor, activations quantized per batch)."""
    from torch.ao.quantization import quantize_dynamic
    return quantize_dynamic(copy.deepcopy(model).eval(), {nn.Linear}, dtype=torch.qint8)


# ----------------------------------------------------------------------------------------------------------------
# save / load

def save_packed(model: nn.Module, path: str) -> int:
    """Save a model whose Linear layers are ``Int8Linear`` (e.g. from ``to_int8``): int8 weights + FP32 scales +
    the remaining FP32 state. Returns the file size in bytes."""
    packed: dict[str, dict[str, Any]] = {}
    for name, mod in model.named_modules():
        if isinstance(mod, Int8Linear):
            packed[name] = {"qweight": mod.qweight, "scale": mod.scale, "bias": mod.bias,
                            "act_scale": None if mod.act_scale is None else float(mod.act_scale)}
    rest = {k: v for k, v in model.state_dict().items()
            if not any(k == f"{n}.{s}" or (not n and k == s) for n in packed for s in ("qweight", "scale", "bias", "act_scale"))}
    torch.save({"format": PACKED_FORMAT, "packed": packed, "state": rest}, path)
    import os
    return os.path.getsize(path)


def load_packed(path: str, template: nn.Module) -> nn.Module:
    """Rebuild a saved packed model on ``template`` (the FP32 architecture, e.g. a fresh model from the factory,
    with BatchNorm folded the same way if it was); its Linear layers at the saved names become Int8Linear."""
    blob = torch.load(path, weights_only=True)
    if not isinstance(blob, dict) or blob.get("format") != PACKED_FORMAT:
        raise ValueError(f"{path} is not a lowp packed model (expected format {PACKED_FORMAT!r})")
    model = copy.deepcopy(template).eval()
    for name, d in blob["packed"].items():
        try:
            old = model.get_submodule(name)
        except AttributeError:
            raise ValueError(f"packed layer {name!r} not found in the template model") from None
        if not isinstance(old, (nn.Linear, Int8Linear, QuantizedLayer)):
            raise ValueError(f"packed layer {name!r} is a {type(old).__name__} in the template, expected Linear")
        _set(model, name, Int8Linear(d["qweight"], d["scale"], d["bias"], d["act_scale"]))
    model.load_state_dict(blob["state"], strict=False)
    return model


def fp32_size(model: nn.Module, path: str) -> int:
    """Size in bytes of ``torch.save(model.state_dict())`` — the FP32 reference for ``save_packed``."""
    import os
    torch.save(model.state_dict(), path)
    return os.path.getsize(path)
