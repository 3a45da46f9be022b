"""A roofline estimate of a training step's GEMMs on real accelerators, from public datasheet peaks.

Each GEMM C[m×n] = A[m×k]·B[k×n] takes max(2mnk / P, bytes / BW) seconds (Williams, Waterman & Patterson 2009,
Roofline: an insightful visual performance model): P the dense peak FLOP/s of the tensor-core rate its operands
run at, BW the memory bandwidth, bytes = (mk·a + kn·b + mn·c) / 8 for operand and result widths a, b, c in bits
(scale overhead of block formats included in the widths). A training step of a linear/conv layer (m tokens or
output positions, k inputs, n outputs) is three GEMMs: forward x·W, dgrad dy·Wᵀ, wgrad xᵀ·dy.

The rate class of a GEMM is set by its widest operand's element width: > 16 bits FP32 (the non-tensor FP32 rate:
PyTorch does not use TF32 for float32 matmuls by default), > 8 bits the BF16/FP16 tensor-core rate, > 4 bits the FP8 rate, else
FP4; a class the hardware lacks runs at its next wider one (FP4 operands on H100 at the FP8 rate).

What this leaves out (why it is an estimate): attention products and non-GEMM ops (norms, activations,
optimizer), kernel-launch and quantization overheads, cache reuse, achieved vs. peak rates (real GEMMs reach
60-80% of peak at large sizes and far less at the tiny sizes of lowp's CPU tasks), and overlap between GEMMs.

Peak numbers (dense, i.e. without 2:4 sparsity; the datasheets print the sparse figure, twice these):
- NVIDIA H100 SXM5: NVIDIA H100 Tensor Core GPU datasheet (2023), https://www.nvidia.com/en-us/data-center/h100/ :
  FP32 67 TFLOPS, BF16 989.5 TFLOPS, FP8 1979 TFLOPS (3958 sparse), HBM3 3.35 TB/s.
- NVIDIA B200: NVIDIA HGX B200 / DGX B200 datasheet (2024), https://www.nvidia.com/en-us/data-center/hgx/ ,
  8-GPU totals divided by 8: FP32 75 TFLOPS (600 for 8 GPUs), BF16 2.25 PFLOPS (36 sparse for 8), FP8 and MXFP8
  4.5 PFLOPS (72 sparse for 8), FP4 9 PFLOPS (144 sparse for 8), HBM3e 8 TB/s per GPU.
- AMD Instinct MI300X: AMD Instinct MI300X data sheet (2023),
  https://www.amd.com/en/products/accelerators/instinct/mi300/mi300x.html : FP32 (matrix) 163.4 TFLOPS, BF16
  1307.4 TFLOPS, FP8 2614.9 TFLOPS (dense), HBM3 5.3 TB/s; no FP4.
"""
from __future__ import annotations

import dataclasses
from typing import Iterable

CLASSES = ("fp4", "fp8", "bf16", "fp32")  # narrowest first


@dataclasses.dataclass(frozen=True)
class Hardware:
    """Dense peak FLOP/s per rate class, memory bandwidth in bytes/s, and the lowp recipe presets made for it."""

    name: str
    peak: dict
    bandwidth: float
    source: str
    presets: tuple[str, ...] = ()


T = 1e12
HARDWARE: dict[str, Hardware] = {
    "H100 SXM": Hardware("H100 SXM", {"fp32": 67 * T, "bf16": 989.5 * T, "fp8": 1979 * T}, 3.35e12,
                         "NVIDIA H100 Tensor Core GPU datasheet", ("h100-fp8",)),
    "B200": Hardware("B200", {"fp32": 75 * T, "bf16": 2250 * T, "fp8": 4500 * T, "fp4": 9000 * T}, 8e12,
                     "NVIDIA HGX B200 datasheet (per GPU)", ("b200-mxfp8", "b200-nvfp4")),
    "MI300X": Hardware("MI300X", {"fp32": 163.4 * T, "bf16": 1307.4 * T, "fp8": 2614.9 * T}, 5.3e12,
                       "AMD Instinct MI300X data sheet", ("mi300-fp8",)),
}


def rate_class(*bits: float) -> str:
    """The tensor-core rate class of a GEMM whose operands are ``bits`` wide (see the module docstring). Widths
    may include block-scale overhead (at most half a bit per element: MX 0.25, NVFP4 0.5), hence the half-bit
    thresholds: an MXFP8 operand (8.25 bits) runs at the FP8 rate, an NVFP4 one (4.5) at the FP4 rate."""
    w = max(bits)
    return "fp32" if w > 16.5 else "bf16" if w > 8.5 else "fp8" if w > 4.5 else "fp4"


def peak(hw: Hardware, cls: str) -> float:
    """``hw``'s peak for ``cls``, or for the next wider class it has."""
    if cls not in CLASSES:
        raise ValueError(f"unknown rate class {cls!r}; valid: {', '.join(CLASSES)}")
    for c in CLASSES[CLASSES.index(cls):]:
        if c in hw.peak:
            return hw.peak[c]
    raise ValueError(f"{hw.name} has no peak for {cls} or wider")


@dataclasses.dataclass(frozen=True)
class Gemm:
    """C[m×n] = A[m×k]·B[k×n] with operand widths ``a_bits``, ``b_bits`` and result width ``c_bits``."""

    m: int
    n: int
    k: int
    a_bits: float
    b_bits: float
    c_bits: float

    @property
    def flops(self) -> int:
        return 2 * self.m * self.n * self.k

    @property
    def bytes(self) -> float:
        return (self.m * self.k * self.a_bits + self.k * self.n * self.b_bits + self.m * self.n * self.c_bits) / 8


def gemm_time(hw: Hardware, g: Gemm) -> float:
    """Roofline time of one GEMM in seconds: max(compute, memory)."""
    return max(g.flops / peak(hw, rate_class(g.a_bits, g.b_bits)), g.bytes / hw.bandwidth)


def step_time(hw: Hardware, gemms: Iterable[Gemm]) -> float:
    """The GEMMs' roofline times summed (no overlap between GEMMs)."""
    return sum(gemm_time(hw, g) for g in gemms)


@dataclasses.dataclass(frozen=True)
class LayerBits:
    """Widths in bits of one layer's training-step tensors: forward x, W, y; dgrad dy, Wᵀ, dx; wgrad x, dy, dW."""

    x: float
    w: float
    y: float
    dy: float
    w_dgrad: float
    dx: float
    x_wgrad: float
    dy_wgrad: float
    dw: float

    @classmethod
    def uniform(cls, bits: float) -> "LayerBits":
        return cls(*([bits] * 9))


def layer_gemms(m: int, k: int, n: int, b: LayerBits) -> tuple[Gemm, Gemm, Gemm]:
    """The three GEMMs of a layer's training step: forward (m×k)·(k×n), dgrad (m×n)·(n×k), wgrad (k×m)·(m×n)."""
    return (Gemm(m, n, k, b.x, b.w, b.y), Gemm(m, k, n, b.dy, b.w_dgrad, b.dx),
            Gemm(k, n, m, b.x_wgrad, b.dy_wgrad, b.dw))
