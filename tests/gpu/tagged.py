"""A stand-in accelerator for machines without one: tensors that hold their values on the CPU but report another
device, with the dispatcher's device rule enforced on every op.

``OnDevice`` wraps a CPU tensor and reports ``device=lazy`` (a non-CPU device type that the CPU build of torch
has a device guard for, so indexing and the other hand-written bindings work; CUDA itself is not linked into that
build). ``tagged()`` is a ``TorchDispatchMode`` that sees every aten op, and

- raises ``DeviceMismatch`` when an op mixes tensors of two devices, with the rule the CUDA dispatcher and
  ``FakeTensor._find_common_device`` apply: a 0-d CPU tensor may join any device (a "CPU scalar"); ``copy_`` and
  ``_to_copy`` move between devices; CPU index tensors may index a device tensor;
- raises it too when a random op gets a generator of another device than its output (CUDA raises there);
- creates tensors asked for on the stand-in device (``device=x.device``) as ``OnDevice`` tensors;
- runs the op on the CPU values, so results, ``.item()`` and data-dependent control flow are real and can be
  compared with the CPU reference bit for bit.

What it cannot see: code that branches on ``device.type == "cuda"`` (none in lowp), CUDA-only kernels
(``torch._scaled_mm``, ``torch._int_mm`` on CUDA) and torch.compile (disabled under any dispatch mode, see
``lowp.formats.compiling.compile_enabled``), so the compiled CUDA kernels are checked only by tests/cuda on a GPU.
``.numpy()`` on an ``OnDevice`` tensor raises, as it does on a CUDA tensor.
"""
from __future__ import annotations

import contextlib

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_map

DEVICE = torch.device("lazy")
aten = torch.ops.aten

# ops whose tensor arguments may legitimately live on different devices
_MIXED_OK = {aten.copy_.default, aten._to_copy.default, aten._foreach_copy.default, aten.index.Tensor,
             aten.index_put_.default, aten.index_put.default, aten._index_put_impl_.default, aten.lift_fresh.default}


class DeviceMismatch(RuntimeError):
    pass


class OnDevice(torch.Tensor):
    """A CPU tensor ``inner`` that reports ``DEVICE``."""

    @staticmethod
    def __new__(cls, inner: torch.Tensor):
        r = torch.Tensor._make_wrapper_subclass(cls, inner.shape, strides=inner.stride(),
                                                storage_offset=inner.storage_offset(), dtype=inner.dtype,
                                                device=DEVICE, requires_grad=inner.requires_grad)
        r.inner = inner
        return r

    def __repr__(self):
        return f"OnDevice({self.inner!r})"

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        raise RuntimeError(f"{func} on an OnDevice tensor outside lowp's tagged() mode")


def to_device(x: torch.Tensor) -> OnDevice:
    """A copy of CPU tensor x on the stand-in device (the analogue of ``x.to("cuda")``)."""
    return OnDevice(x.detach().clone()).requires_grad_(x.requires_grad)


def to_cpu(x: torch.Tensor) -> torch.Tensor:
    return x.inner if isinstance(x, OnDevice) else x


def _is_dev(d) -> bool:
    return d is not None and torch.device(d).type == DEVICE.type


class _Tagged(TorchDispatchMode):
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        flat, _ = tree_flatten((args, kwargs))
        devices = set()
        for t in flat:
            if isinstance(t, OnDevice):
                devices.add("dev")
            elif isinstance(t, torch.Tensor) and not (t.dim() == 0 and t.device.type == "cpu"):
                devices.add(t.device.type)
        if len(devices) > 1 and func not in _MIXED_OK:
            raise DeviceMismatch(f"{func}: tensors on {sorted(devices)} (a CUDA run raises 'Expected all tensors "
                                 f"to be on the same device')")
        out_dev = "dev" in devices and func not in (aten._to_copy.default,)
        if "device" in kwargs:
            want = kwargs["device"]
            out_dev = _is_dev(want)
            if out_dev:
                kwargs["device"] = torch.device("cpu")
        elif func is aten._to_copy.default:
            out_dev = isinstance(args[0], OnDevice)
        gen = kwargs.get("generator")
        if gen is not None and (gen.device.type == "cpu") == out_dev:
            raise DeviceMismatch(f"{func}: a generator on {gen.device} for a tensor on "
                                 f"{DEVICE if out_dev else 'cpu'}")
        # in-place and out= ops return one of their arguments: give back that argument as it was passed
        passed = {id(to_cpu(t)): t for t in flat if isinstance(t, torch.Tensor)}
        args, kwargs = tree_map(to_cpu, (args, kwargs))
        res = func(*args, **kwargs)

        def wrap(r):
            if not isinstance(r, torch.Tensor):
                return r
            if id(r) in passed:
                return passed[id(r)]
            return OnDevice(r) if out_dev else r

        return tree_map(wrap, res)


@contextlib.contextmanager
def tagged():
    """Run the block with the stand-in device's rules (see the module docstring)."""
    with _Tagged():
        yield
