"""Real low-precision execution on the CPU, and saving/loading quantized models with packed integer weights.

- BF16: ``to_bf16(model)`` runs every Linear/Conv in bfloat16 on oneDNN (avx512_bf16 where the CPU has it), inputs
  cast on entry and the output cast back to float32.
- INT8: ``Int8Linear`` holds int8 weights q_w with one FP32 scale s_w per output channel (symmetric,
  s_w = amax/127) and quantizes its input per tensor on the fly (dynamic: s_x = amax/127, or a calibrated static
  scale); the GEMM is ``torch._int_mm`` (int8 × int8 → int32, VNNI) and y = (q_x q_wᵀ)·s_x·s_w + b.
  torch._int_mm wants K, N multiples of 8 (and M > 16 on CUDA): K and N are zero-padded (zeros add nothing);
  for M = 1 the weight is passed column-major, the layout oneDNN runs fastest for matrix-vector products.
  On the CPU the same integer product runs by default on fbgemm's prepacked int8 GEMM (the kernel behind torch.ao's
  quantized Linear, ``quantized::linear_with_input_q_dq_qweight_dq_output_fp32``; weight prepacked once, per
  channel): lowp quantizes x itself and hands fbgemm q_x·s_x with zero point 128, so fbgemm's codes are lowp's
  q_x (|q_x·s_x / s_x - q_x| << 1/2), its int32 accumulators equal torch._int_mm's, its dequantisation is the
  same fl(acc · fl(s_x s_w)), and the bias is added afterwards as on the _int_mm path: the two kernels give
  bit-identical outputs (tested). ``kernel="auto"`` takes fbgemm for CPU inputs of at most ``FBGEMM_MAX_ROWS`` (32)
  rows, where it is the faster kernel here (batch 1: ≈1.7× faster than _int_mm; batch 256: ≈1.5× slower), when a
  one-time check of an adversarial product (all codes ±127, where an int16-accumulating kernel would saturate) is
  exact; else _int_mm. Since the two kernels agree bit for bit, the dispatch never changes a result.
  The result equals the fake-quantized reference F.linear(fq(x), fq(W)) up to float32 rounding of the dequantisation.
- ``dynamic_int8(model)``: torch.ao's dynamic quantized Linear (fbgemm), as an alternative kernel (its own numerics:
  per-tensor weights, asymmetric uint8 activations with a reduced range).
- ``save_packed(model, path)`` / ``load_packed(path, template)``: int8 weights and FP32 scales are stored as int8 /
  float32 tensors with ``torch.save``; everything else as the FP32 state dict. Reload is bit-identical.
"""
from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch import nn

from ..formats import IntFormat
from .calibration import QParams
from .ptq import QuantizedLayer

PACKED_FORMAT = "lowp-packed-int8-v1"
KERNELS = ("auto", "fbgemm", "int_mm")
FBGEMM_MAX_ROWS = 32  # kernel="auto": fbgemm up to this many rows (matrix-vector-like products), _int_mm above


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


def _prepack(qweight: torch.Tensor, scale: torch.Tensor):
    """fbgemm's prepacked per-channel int8 weight (no bias: lowp adds it after the dequantisation)."""
    import warnings

    n = qweight.shape[0]
    with warnings.catch_warnings():  # torch marks quantized tensor creation deprecated (fbgemm's path still uses it)
        warnings.simplefilter("ignore", UserWarning)
        qw = torch._make_per_channel_quantized_tensor(qweight, scale.double(), torch.zeros(n, dtype=torch.int64), 0)
        return torch.ops.quantized.linear_prepack(qw, None)


def _fbgemm_linear(xq_dq: torch.Tensor, sx: float, packed) -> torch.Tensor:
    return torch.ops.quantized.linear_with_input_q_dq_qweight_dq_output_fp32(xq_dq, sx, 128, packed)


_FBGEMM_OK: bool | None = None


def fbgemm_exact() -> bool:
    """Whether fbgemm's int8 Linear is available here and exact on an adversarial product: every activation code
    +-127 (uint8 255 / 1 with zero point 128) against weights +-127, where a kernel that sums pairs of u8 x s8
    products in int16 (AVX2 without VNNI) would saturate. Checked once per process against torch._int_mm."""
    global _FBGEMM_OK
    if _FBGEMM_OK is None:
        try:
            k, n = 64, 16
            qw = torch.full((n, k), 127, dtype=torch.int8)
            qw[1::2] = -127
            qx = torch.full((3, k), 127.0)
            qx[1] = -127.0
            qx[2, ::2] = -127.0
            y = _fbgemm_linear(qx, 1.0, _prepack(qw, torch.ones(n)))
            ref = int8_matmul(qx.to(torch.int8), qw.t().contiguous()).float()
            _FBGEMM_OK = bool(torch.equal(y, ref))
        except (RuntimeError, AttributeError):  # no fbgemm / quantized engine in this build
            _FBGEMM_OK = False
    return _FBGEMM_OK


class Int8Linear(nn.Module):
    """Linear layer executed with int8 weights and activations on fbgemm or torch._int_mm (see the module
    docstring); ``kernel`` is ``auto`` (fbgemm for CPU inputs of at most ``FBGEMM_MAX_ROWS`` rows where it is
    exact, else _int_mm), ``fbgemm`` or ``int_mm``."""

    def __init__(self, qweight: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None,
                 act_scale: float | None = None, kernel: str = "auto") -> None:
        super().__init__()
        if qweight.dtype != torch.int8 or qweight.dim() != 2:
            raise ValueError(f"Int8Linear needs a 2-D int8 weight, got {qweight.dtype} of shape {tuple(qweight.shape)}")
        if kernel not in KERNELS:
            raise ValueError(f"Int8Linear kernel must be one of {', '.join(KERNELS)}, got {kernel!r}")
        self.kernel = kernel
        self.register_buffer("qweight", qweight.contiguous().clone())
        self.register_buffer("scale", scale.detach().float().contiguous().clone())  # own storage: saves small
        self.register_buffer("bias", None if bias is None else bias.detach().float().clone())
        self.register_buffer("act_scale", None if act_scale is None else torch.tensor(float(act_scale)))
        # K- and N-padded copies for _int_mm (not saved): (N, K) row-major, whose .t() is the column-major B that
        # oneDNN runs fastest for M = 1 (≈5x here), and its (K, N) row-major transpose, fastest for M > 1
        self._qw = _pad_to(_pad_to(self.qweight, 0, 8), 1, 8).contiguous()
        self._qw_t = self._qw.t().contiguous()
        self._packed = None  # fbgemm's prepacked weight, built at the first fbgemm call (not saved)

    def _apply(self, fn, *args, **kwargs):
        """``.to(device)`` / ``.cuda()`` move the padded copies (plain attributes, not buffers) with the buffers."""
        super()._apply(fn, *args, **kwargs)
        self._qw, self._qw_t = fn(self._qw), fn(self._qw_t)
        return self

    @classmethod
    def from_linear(cls, lin: nn.Linear, act_scale: float | None = None, kernel: str = "auto") -> "Int8Linear":
        q, s = quantize_per_channel_int8(lin.weight)
        return cls(q, s, lin.bias, act_scale, kernel)

    def _input_scale(self, x2: torch.Tensor) -> torch.Tensor:
        if self.act_scale is not None:
            return self.act_scale.float()
        a = x2.abs().amax()
        return torch.where(a > 0, a / 127, torch.ones_like(a))

    def quantize_input(self, x2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        sx = self._input_scale(x2)
        qx = torch.clamp(torch.round(x2 / sx), -127, 127).to(torch.int8)
        return qx, sx

    def uses_fbgemm(self, x: torch.Tensor) -> bool:
        """Whether a call with input ``x`` runs on fbgemm."""
        if self.kernel == "int_mm" or x.device.type != "cpu":
            return False
        if self.kernel == "fbgemm":
            return True
        return x.reshape(-1, x.shape[-1]).shape[0] <= FBGEMM_MAX_ROWS and fbgemm_exact()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x2 = x.reshape(-1, shape[-1]).float()
        m, n = x2.shape[0], self.qweight.shape[0]
        y = None
        if self.uses_fbgemm(x2):
            sx = self._input_scale(x2)
            sxf = float(sx)
            if math.isfinite(sxf) and sxf >= 2.0**-100:  # 1 / s_x finite for fbgemm's own quantization
                if self._packed is None:
                    self._packed = _prepack(self.qweight, self.scale)
                xq = torch.round(x2 / sx).clamp_(-127, 127).mul_(sx)  # lowp's codes, times s_x
                y = _fbgemm_linear(xq, sxf, self._packed)
        if y is None:
            qx, sx = self.quantize_input(x2)
            a = _pad_to(qx, 1, 8)
            acc = _int_mm(a, self._qw.t() if m == 1 else self._qw_t)[:m, :n]
            y = acc.float() * (sx * self.scale)
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*shape[:-1], n)

    def __getstate__(self):  # copy / pickle without fbgemm's packed weight (rebuilt at the next call)
        state = super().__getstate__() if hasattr(super(), "__getstate__") else self.__dict__.copy()
        state = dict(state)
        state["_packed"] = None
        return state

    def extra_repr(self) -> str:
        return (f"in={self.qweight.shape[1]}, out={self.qweight.shape[0]}, static={self.act_scale is not None}, "
                f"kernel={self.kernel}")


def _set(root: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, leaf, new)


def to_int8(model: nn.Module, static: bool = True, kernel: str = "auto") -> nn.Module:
    """A copy of ``model`` with every nn.Linear (and every INT8-quantized ``QuantizedLayer`` over a Linear, using its
    calibrated symmetric input scale when ``static``) replaced by ``Int8Linear`` running on ``kernel``.
    Convolutions stay as they are."""
    if kernel not in KERNELS:
        raise ValueError(f"kernel must be one of {', '.join(KERNELS)}, got {kernel!r}")
    model = copy.deepcopy(model).eval()
    for name, mod in list(model.named_modules()):
        if isinstance(mod, QuantizedLayer) and isinstance(mod.inner, nn.Linear):
            qp: QParams | None = mod.act_qparams
            sc = qp.scale if (static and qp is not None and qp.symmetric and qp.qmax == 127) else None
            _set(model, name, Int8Linear.from_linear(_as_linear(mod.inner, mod.weight_q), sc, kernel))
        elif isinstance(mod, nn.Linear) and not _inside_quantized(model, name):
            _set(model, name, Int8Linear.from_linear(mod, kernel=kernel))
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
