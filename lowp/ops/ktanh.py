"""K-TanH: tanh by integer operations on the BF16 bit pattern, and the activations derived from it.

Source: Kundu, Heinecke, Kalamkar et al. 2019, "K-TanH: Efficient TanH for Deep Learning". With p = |x| as a BF16
bit pattern (sign s copied to the output, so odd symmetry is exact), M = p & 0x7F the stored mantissa:

    p <  T1  ->  p                                   identity, tanh x ~ x
    p >= T2  ->  0x3F80                              1.0 (also for Inf; NaN stays NaN)
    else     ->  (E_t << 7) + b_t + (M >> r_t),      t = (p >> 4) & 31

t is the 2 low exponent bits and the 3 high mantissa bits; entry t holds the output exponent E_t, a right shift
r_t of the input mantissa and a bias b_t in [0, 127]. Choices the paper text (abstract only in our seeds) leaves
open, and ours: the output is one 16-bit integer add, so a carry out of the 7-bit mantissa increments the exponent
(tanh crosses 0.5 inside one entry's interval); the thresholds T1, T2 are fitted together with the table
(``scripts/fit_ktanh.py``, exhaustive over every BF16 input; shipped in ``ktanh_table.json``), restricted so that
every index serves one run of 16 consecutive inputs. Two tables: "max" (minimax abs error ~8.9e-3, ties by mean),
"mean" (least mean abs error over all finite BF16 inputs). Both are monotone (enforced in the fit).

Input: BF16 or float32 (first rounded to BF16, nearest-even, by torch's cast); output the input's dtype, every value
a BF16 value. The core (``ktanh_bits``) is int16 only. Gradient: the exact tanh derivative taken at the K-TanH
output, 1 - y^2 (as torch's tanh backward, which also uses the output).

Derived (float32 arithmetic around the integer core, one final rounding to BF16 for BF16 inputs):
sigmoid(x) = (1 + ktanh(x/2)) / 2, swish(x) = x sigmoid(x),
gelu(x) = x/2 (1 + ktanh(sqrt(2/pi) (x + 0.044715 x^3))) (the tanh form, also for nn.GELU(approximate="none")).
"""
from __future__ import annotations

import functools
import json
import math
import pathlib
from dataclasses import dataclass

import torch
from torch import nn

from ..formats.compiling import cached, compiled as _compiled_twin, worth_it

_TABLE_PATH = pathlib.Path(__file__).with_name("ktanh_table.json")
_ONE = 0x3F80      # BF16 1.0
_INF = 0x7F80      # BF16 +Inf; larger magnitudes are NaN
_SIGN = -0x8000    # 0x8000 as int16
TABLES = ("max", "mean")


@dataclass(frozen=True)
class KTanhTable:
    """One fitted K-TanH parameter set: thresholds T1, T2 (BF16 patterns) and 32 (exponent, shift, bias) entries."""

    name: str
    t1: int
    t2: int
    exponent: tuple[int, ...]
    shift: tuple[int, ...]
    bias: tuple[int, ...]
    max_abs_error: float
    mean_abs_error: float

    @functools.cached_property
    def base(self) -> torch.Tensor:
        """int16 [32]: (E_t << 7) + b_t, the word the shifted mantissa is added to."""
        return torch.tensor([(e << 7) + b for e, b in zip(self.exponent, self.bias)], dtype=torch.int16)

    @functools.cached_property
    def shifts(self) -> torch.Tensor:
        return torch.tensor(self.shift, dtype=torch.int16)

    @functools.cached_property
    def t1_t(self) -> torch.Tensor:
        return torch.tensor(self.t1, dtype=torch.int16)

    @functools.cached_property
    def t2_t(self) -> torch.Tensor:
        return torch.tensor(self.t2, dtype=torch.int16)


@functools.lru_cache(maxsize=None)
def load_table(name: str = "max") -> KTanhTable:
    """The shipped table ``name`` ("max": minimax error, "mean": least mean error)."""
    if name not in TABLES:
        raise ValueError(f"unknown K-TanH table {name!r}; known: {', '.join(TABLES)}")
    d = json.loads(_TABLE_PATH.read_text())["tables"][name]
    return KTanhTable(name, int(d["t1"]), int(d["t2"]), tuple(d["exponent"]), tuple(d["shift"]), tuple(d["bias"]),
                      float(d["max_abs_error"]), float(d["mean_abs_error_all_finite"]))


def _as_table(table: str | KTanhTable) -> KTanhTable:
    return table if isinstance(table, KTanhTable) else load_table(table)


def ktanh_bits(bits: torch.Tensor, table: str | KTanhTable = "max", *, compiled: bool | None = None) -> torch.Tensor:
    """K-TanH on int16 BF16 bit patterns -> int16 BF16 bit patterns (integer ops only: and, shift, add, compare,
    a 32-entry gather). ``compiled``: use the torch.compile'd twin (None: for CPU tensors where the package's compile
    switch says so, ``compiling.worth_it``; compiled lazily on first use, falls back to eager if compiling fails)."""
    if bits.dtype != torch.int16:
        raise TypeError(f"ktanh_bits expects int16 BF16 bit patterns, got {bits.dtype}")
    tab = _as_table(table)
    if compiled is None:
        compiled = bits.device.type == "cpu" and worth_it(bits.numel())
    if compiled:
        fn = _get_compiled()
        if fn is not None:
            flat = bits.reshape(-1)
            d = flat.device
            return fn(flat, tab.base.to(d), tab.shifts.to(d), tab.t1_t.to(d), tab.t2_t.to(d)).view(bits.shape)
    return _core_eager(bits, tab)


def _core_eager(bits: torch.Tensor, tab: KTanhTable) -> torch.Tensor:
    """Eager int16 core, in-place where possible (each op is one pass over memory)."""
    base, shifts = tab.base.to(bits.device), tab.shifts.to(bits.device)
    shape, bits = bits.shape, bits.reshape(-1)
    a = bits & 0x7FFF
    idx = (a >> 4).bitwise_and_(31).to(torch.int32)
    out = base.index_select(0, idx)
    out += (a & 0x7F).bitwise_right_shift_(shifts.index_select(0, idx))
    out = torch.where(a < tab.t1, a, out)
    out.masked_fill_(a >= tab.t2, _ONE)
    nan = a > _INF
    if nan.any():
        out = torch.where(nan, a, out)
    return out.bitwise_or_(bits & _SIGN).view(shape)


def _core_pure(bits, base, shifts, t1, t2):
    """The same core without in-place ops or data-dependent branches, table as tensors: what torch.compile fuses
    into one loop (one graph serves both tables and every shape)."""
    a = bits & 0x7FFF
    idx = ((a >> 4) & 31).to(torch.int64)
    mid = base[idx] + ((a & 0x7F) >> shifts[idx])
    out = torch.where(a < t1, a, mid)
    out = torch.where(a >= t2, torch.where(a > _INF, a, torch.full_like(a, _ONE)), out)
    return out | (bits & _SIGN)


compiled_calls = 0


def _probe(fn) -> bool:
    """The compiled core against the eager one on every int16 pattern."""
    probe = torch.arange(-32768, 32768, dtype=torch.int32).to(torch.int16)
    tab = load_table("max")
    return torch.equal(fn(probe, tab.base, tab.shifts, tab.t1_t, tab.t2_t), _core_eager(probe, tab))


def _get_compiled():
    """The compiled core (counted in ``compiled_calls``), or None where compiling failed (then the eager core)."""
    global compiled_calls
    fn = cached("ktanh") or _compiled_twin(_core_pure, "ktanh", probe=_probe, what="lowp.ktanh core")
    if not fn.ok:
        return None
    compiled_calls += 1
    return fn


def _ktanh_forward(x: torch.Tensor, table: KTanhTable, compiled: bool | None) -> torch.Tensor:
    if x.dtype == torch.bfloat16:
        return ktanh_bits(x.contiguous().view(torch.int16), table, compiled=compiled).view(torch.bfloat16)
    if x.dtype == torch.float32:
        xb = x.to(torch.bfloat16)  # nearest-even, NaN kept
        return ktanh_bits(xb.view(torch.int16), table, compiled=compiled).view(torch.bfloat16).to(torch.float32)
    raise TypeError(f"ktanh takes bfloat16 or float32 tensors, got {x.dtype}")


class _KTanhFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, table, compiled):
        y = _ktanh_forward(x, table, compiled)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        yf = y.float()
        return (g.float() * (1.0 - yf * yf)).to(g.dtype), None, None


def ktanh(x: torch.Tensor, table: str | KTanhTable = "max", *, compiled: bool | None = None) -> torch.Tensor:
    """K-TanH of a BF16 or float32 tensor (float32 rounded to BF16 first); same dtype out, BF16-valued.
    Backward: g * (1 - y^2) at the K-TanH output y. ``compiled``: see :func:`ktanh_bits`."""
    tab = _as_table(table)
    if torch.is_grad_enabled() and x.requires_grad:
        return _KTanhFn.apply(x, tab, compiled)
    return _ktanh_forward(x, tab, compiled)


def _check(x: torch.Tensor) -> None:
    if x.dtype not in (torch.bfloat16, torch.float32):
        raise TypeError(f"K-TanH activations take bfloat16 or float32 tensors, got {x.dtype}")


def _sigmoid_f32(x: torch.Tensor, table) -> torch.Tensor:
    return (1.0 + ktanh(x * 0.5, table).float()) * 0.5


def ksigmoid(x: torch.Tensor, table: str | KTanhTable = "max") -> torch.Tensor:
    """sigmoid(x) = (1 + ktanh(x/2)) / 2, in x's dtype."""
    _check(x)
    return _sigmoid_f32(x, table).to(x.dtype)


def kswish(x: torch.Tensor, table: str | KTanhTable = "max") -> torch.Tensor:
    """swish / SiLU: x * sigmoid(x) with the K-TanH sigmoid, in x's dtype."""
    _check(x)
    return (x.float() * _sigmoid_f32(x, table)).to(x.dtype)


_GELU_C = math.sqrt(2.0 / math.pi)


def kgelu(x: torch.Tensor, table: str | KTanhTable = "max") -> torch.Tensor:
    """GELU, tanh form: x/2 (1 + ktanh(sqrt(2/pi) (x + 0.044715 x^3))), in x's dtype."""
    _check(x)
    xf = x.float()
    t = ktanh(_GELU_C * (xf + 0.044715 * xf * xf * xf), table).float()
    return (0.5 * xf * (1.0 + t)).to(x.dtype)


class _KAct(nn.Module):
    fn = staticmethod(ktanh)

    def __init__(self, table: str = "max"):
        super().__init__()
        _as_table(table)  # fail early on an unknown name
        self.table = table

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return type(self).fn(x, self.table)

    def extra_repr(self) -> str:
        return f"table={self.table!r}"


class KTanh(_KAct):
    """nn.Module for :func:`ktanh`."""
    fn = staticmethod(ktanh)


class KSigmoid(_KAct):
    """nn.Module for :func:`ksigmoid`."""
    fn = staticmethod(ksigmoid)


class KSwish(_KAct):
    """nn.Module for :func:`kswish` (replaces nn.SiLU)."""
    fn = staticmethod(kswish)


class KGELU(_KAct):
    """nn.Module for :func:`kgelu` (tanh-form GELU)."""
    fn = staticmethod(kgelu)


REPLACEMENTS = ((nn.Tanh, KTanh), (nn.Sigmoid, KSigmoid), (nn.GELU, KGELU), (nn.SiLU, KSwish))


def _replacement(m: nn.Module, table: str) -> nn.Module | None:
    for src, dst in REPLACEMENTS:
        if isinstance(m, src):
            new = dst(table)
            new.__dict__["_lowp_original"] = m  # kept for restore_activations, not registered as a submodule
            return new
    return None


def replace_activations(model: nn.Module, table: str = "max") -> nn.Module:
    """Swap every nn.Tanh, nn.Sigmoid, nn.GELU, nn.SiLU submodule of ``model`` for KTanh, KSigmoid, KGELU, KSwish,
    in place; returns ``model`` (or the replacement when ``model`` itself is one of them). Activations called as
    functions (torch.tanh, F.gelu) or inside fused modules (nn.GRU, nn.LSTM) are not reached."""
    _as_table(table)
    root = _replacement(model, table)
    if root is not None:
        return root
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            new = _replacement(child, table)
            if new is not None:
                setattr(parent, name, new)
    return model


def restore_activations(model: nn.Module) -> nn.Module:
    """Undo :func:`replace_activations`: put back the original module instances; returns ``model``."""
    if "_lowp_original" in model.__dict__:
        return model.__dict__["_lowp_original"]
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if "_lowp_original" in child.__dict__:
                setattr(parent, name, child.__dict__["_lowp_original"])
    return model


__all__ = ["ktanh", "ktanh_bits", "ksigmoid", "kswish", "kgelu", "KTanh", "KSigmoid", "KSwish", "KGELU",
           "replace_activations", "restore_activations", "load_table", "KTanhTable", "TABLES"]
