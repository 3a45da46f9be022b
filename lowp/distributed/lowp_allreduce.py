"""Low-precision gradient all-reduce: each worker's gradient is cast to a lowp format before the all-reduce and the
reduced result is cast again before it is handed back ("cast before and back after"). This module holds the
numerics (the codec: scales, rounding, random bits, error feedback) and its FP32-emulated use (``encode`` /
``decode``, the ``:emulated`` hook); ``wire_allreduce`` sends the same messages as format codes.

Emulation of a ring all-reduce whose payload is in format F (reduce-scatter, then all-gather):

1. reduce-scatter payload: every worker quantizes its (error-compensated) gradient x per parameter tensor:
   q = Q(x * s) / s with a per-tensor scale s = (F.max / amax(x)) (current scaling, ``lowp.scaling``) for formats
   with a narrow range (fp8, fp16; ``scaled=None`` decides by range), s = 1 for bf16 / fp32-range formats. Rounding
   ``nearest`` or ``stochastic`` (independent random bits per worker and step). The decoded values are summed in
   FP32 (what a receiver does after decoding each chunk), here by a plain FP32 all-reduce of q.
2. all-gather payload: the averaged sum is quantized once more (per-tensor scale from the average, identical on all
   workers; for stochastic rounding the random bits are keyed by (seed, step, tensor) shared by all workers, so the
   replicas stay bit-identical).

Error feedback (optional): e' = x - q with x = g + e, kept locally (only for phase 1, the worker's own message).

``bytes`` estimates one message per step and worker: n * bits(F) / 8 (+ 4 bytes per tensor for the scale when
scaled); the FP32 reference is 4 n. The bytes really sent are counted by ``lowp.distributed.comm``.
"""
from __future__ import annotations

import math

import torch

from ..formats import get_format
from ..scaled_quantizer import ScaledQuantizer

ROUNDINGS = ("nearest", "stochastic")


def format_bits(fmt) -> int:
    return get_format(fmt).info.bits


class LowpAllreduceCodec:
    """Per-tensor quantization of gradient messages; holds the error-feedback residues and byte counts."""

    def __init__(self, fmt: str = "bf16", rounding: str = "nearest", *, error_feedback: bool = False,
                 scaled: bool | None = None, seed: int = 0, rank: int = 0) -> None:
        self.fmt = get_format(fmt)
        if rounding not in ROUNDINGS:
            raise ValueError(f"all-reduce rounding must be one of {', '.join(ROUNDINGS)}, got {rounding!r}")
        self.rounding = rounding
        self.bits = format_bits(self.fmt)
        fmax = self.fmt.info.max
        if scaled is None:
            scaled = fmax is not None and fmax < 1e30
        self.scaled = bool(scaled)
        # the one scaled quantizer (per-tensor current scaling when scaled), per rounding mode used
        scaling = "current" if self.scaled else "none"
        self._quantizers = {r: ScaledQuantizer(self.fmt, r, saturate=True, scaling=scaling, any_size=False)
                            for r in ROUNDINGS}
        self.error_feedback = bool(error_feedback)
        self.seed, self.rank = int(seed), int(rank)
        self.errors: dict = {}
        self.bytes = 0
        self.dense_bytes = 0
        self.calls = 0

    @property
    def fmt_max(self) -> float:
        return float(self.fmt.info.max)

    def grid_values(self, x: torch.Tensor, rounding: str, gen: torch.Generator | None
                    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(v, s): v = Q(x · s) on the format's grid (saturating) and the per-tensor scale s (None when unscaled);
        the message value is v / s. x must be finite."""
        q = self._quantizers[rounding]
        s = q.scale(x)
        return q.round(x if s is None else x * s, gen), s

    def _q(self, x: torch.Tensor, rounding: str, gen: torch.Generator | None) -> torch.Tensor:
        if not bool(torch.isfinite(x).all()):
            return x  # an overflowed step passes through unchanged, so the loss scaler sees the Inf/NaN and skips
        v, s = self.grid_values(x, rounding, gen)
        return v / s if s is not None else v

    def _gen(self, *key: int) -> torch.Generator:
        h = 0
        for k in key:
            h = (h * 1_000_003 + int(k)) % (2**62)
        return torch.Generator().manual_seed(h)

    def phase1_generator(self, key: int, step: int) -> torch.Generator | None:
        """Random bits of this rank's message for tensor ``key`` (None for nearest rounding)."""
        return self._gen(self.seed, 1, self.rank, step, key) if self.rounding == "stochastic" else None

    def phase2_generator(self, key: int, step: int) -> torch.Generator | None:
        """Random bits of the averaged tensor ``key``, the same on every rank (None for nearest rounding)."""
        return self._gen(self.seed, 2, step, key) if self.rounding == "stochastic" else None

    def message_input(self, key: int, g: torch.Tensor) -> torch.Tensor:
        """x = g (float32) plus the error-feedback residue of ``key`` when error feedback is on."""
        x = g.float()
        if self.error_feedback and key in self.errors:
            x = x + self.errors[key]
        return x

    @torch.no_grad()
    def encode(self, key: int, g: torch.Tensor, step: int) -> torch.Tensor:
        """Phase 1: this worker's message for tensor ``key`` (decoded, float32, g's shape)."""
        x = self.message_input(key, g)
        q = self._q(x, self.rounding, self.phase1_generator(key, step))
        if self.error_feedback:
            self.errors[key] = x - q
        self.count_message(g.numel())
        return q

    def count_message(self, n: int) -> None:
        """Add one message of ``n`` entries to the estimate: ceil(n · bits / 8) (+ 4 for the scale when scaled)."""
        self.bytes += math.ceil(n * self.bits / 8) + (4 if self.scaled else 0)
        self.dense_bytes += 4 * n

    @torch.no_grad()
    def decode(self, key: int, avg: torch.Tensor, step: int) -> torch.Tensor:
        """Phase 2: the averaged result as the all-gather would carry it (same on every worker)."""
        return self._q(avg.float(), self.rounding, self.phase2_generator(key, step))
