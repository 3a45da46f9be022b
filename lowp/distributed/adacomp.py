"""AdaComp (Chen et al. 2018): adaptive residual gradient compression, one layer (parameter tensor) at a time.

For a layer with gradient g and locally kept residue r (Chen et al. 2018, AdaComp):

    G = r + g                      accumulated gradient residue
    H = G + g                      the "self-boosted" value used for selection
    split G (flattened) into bins of L consecutive entries (L ~ 50 for conv, ~ 500 for fully connected)
    in each bin: gmax = max |G|;  select entry i  iff  G_i != 0  and  |H_i| >= gmax
    sent_i = sign(G_i) * scale for selected i, 0 elsewhere   (one float32 ``scale`` per layer)
    r' = G - sent                  kept locally, added to the next step's gradient

Choices the abstract does not pin down (documented, tested):

- ``scale`` = mean |G_i| over the selected entries of the layer, rounded to float32 (the L2-optimal single
  magnitude for the chosen signs).
- The bin's max-|G| entry is always selected (when G is not all zero in the bin). With the plain rule a bin can
  send nothing when g points against the residue (|G + g| < |G| for every entry); forcing its largest entry keeps
  the guarantee "every non-empty bin sends >= 1 entry". ``forced`` counts how often this added an entry.
- G and the residue are kept in float64 so that ``sent + residue == G`` holds exactly (checked element-wise: an
  entry whose subtraction G - sent would round — only possible when |G_i| is ~2^-29 of ``scale`` or less — is
  deselected and kept whole in the residue, so nothing is ever lost; ``inexact`` counts such entries).

Message size (what would cross the wire; the hook all-reduces the dense decompressed tensor instead, which is
numerically the same sum): per selected entry an index of ceil(log2 n) bits plus 1 sign bit, plus one 32-bit scale
per layer, rounded up to whole bytes. The dense FP32 message is 4 n bytes.
"""
from __future__ import annotations

import dataclasses
import math

import torch

CONV_BIN = 50
FC_BIN = 500


def bin_length_for(shape: torch.Size | tuple[int, ...], conv_bin: int = CONV_BIN, fc_bin: int = FC_BIN) -> int:
    """Bin length for a parameter of ``shape``: ``fc_bin`` for 2-D (Linear / recurrent) weights, ``conv_bin`` for
    convolution kernels (>= 3-D) and for 1-D tensors (biases, norm scales; small, kept at the fine bin)."""
    return fc_bin if len(shape) == 2 else conv_bin


def message_bytes(n: int, selected: int) -> int:
    """Bytes of the compressed message of a layer of ``n`` entries with ``selected`` entries sent:
    selected * (ceil(log2 n) index bits + 1 sign bit) + 32-bit scale, rounded up to bytes."""
    if n <= 0:
        return 0
    index_bits = max(1, math.ceil(math.log2(n)))
    return math.ceil((selected * (index_bits + 1) + 32) / 8)


@dataclasses.dataclass
class AdaCompStep:
    """The outcome of compressing one layer for one step."""

    sent: torch.Tensor        # float32, the decompressed message (sign * scale at selected entries, else 0)
    residue: torch.Tensor     # float64, G - sent (kept locally)
    accumulated: torch.Tensor  # float64, G = old residue + g
    mask: torch.Tensor        # bool, selected entries
    scale: float              # the layer's float32 scale (0.0 when nothing is sent)
    selected: int
    numel: int
    bins: int
    nonempty_bins: int
    forced: int               # entries added only by the ">= 1 per non-empty bin" guarantee
    inexact: int              # entries deselected because G - sent would have rounded
    bytes: int                # compressed message size
    dense_bytes: int          # 4 * numel

    @property
    def rate(self) -> float:
        """Fraction of entries sent."""
        return self.selected / self.numel if self.numel else 0.0


def _two_sum_error(a: torch.Tensor, b: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """Knuth's TwoSum: (a + b) - s exactly, for s = fl(a + b) (no overflow)."""
    bb = s - a
    return (a - (s - bb)) + (b - bb)


@torch.no_grad()
def adacomp_compress(g: torch.Tensor, residue: torch.Tensor | None, bin_len: int) -> AdaCompStep:
    """One AdaComp step for one layer: ``g`` the fresh local gradient (any float dtype and shape), ``residue`` the
    float64 residue of the previous step (same numel) or None for zeros. Returns the message and the new residue
    (both flat)."""
    if isinstance(bin_len, bool) or not isinstance(bin_len, int) or bin_len < 1:
        raise ValueError(f"bin length must be a positive int, got {bin_len!r}")
    gd = g.detach().reshape(-1).to(torch.float64)
    n = gd.numel()
    if residue is None:
        residue = torch.zeros_like(gd)
    elif residue.numel() != n:
        raise ValueError(f"residue has {residue.numel()} entries, gradient has {n}")
    G = residue.reshape(-1).to(torch.float64) + gd
    H = G + gd
    nb = max(1, math.ceil(n / bin_len))
    pad = nb * bin_len - n
    Gb = torch.nn.functional.pad(G, (0, pad)).view(nb, bin_len)
    Hb = torch.nn.functional.pad(H, (0, pad)).view(nb, bin_len)
    absG = Gb.abs()
    gmax, arg = absG.max(dim=1, keepdim=True)
    mask = (Hb.abs() >= gmax) & (Gb != 0)
    nonempty = (gmax > 0).view(-1)
    forced_m = torch.zeros_like(mask)
    forced_m.scatter_(1, arg, nonempty.view(-1, 1))
    forced = int((forced_m & ~mask).sum())
    mask = (mask | forced_m).view(-1)[:n]
    k = int(mask.sum())
    if k:
        scale = float(torch.tensor(float(G[mask].abs().mean()), dtype=torch.float32))
    else:
        scale = 0.0
    sent = torch.where(mask, torch.sign(G) * scale, torch.zeros_like(G))  # exact: sign * float32 value
    new_res = G - sent
    exact = _two_sum_error(G, -sent, new_res) == 0  # the subtraction was exact (real arithmetic)
    inexact_m = mask & ~exact
    inexact = int(inexact_m.sum())
    if inexact:
        mask = mask & ~inexact_m
        sent = torch.where(mask, sent, torch.zeros_like(sent))
        new_res = G - sent
        k = int(mask.sum())
    return AdaCompStep(sent=sent.to(torch.float32), residue=new_res, accumulated=G, mask=mask, scale=scale,
                       selected=k, numel=n, bins=nb, nonempty_bins=int(nonempty.sum()), forced=forced,
                       inexact=inexact, bytes=message_bytes(n, k), dense_bytes=4 * n)


class AdaCompCompressor:
    """Per-layer residues and statistics across steps; ``compress(key, g)`` returns the float32 message for the
    layer ``key`` (any hashable: the hook uses the parameter's position in the model) and updates its residue."""

    def __init__(self, conv_bin: int = CONV_BIN, fc_bin: int = FC_BIN) -> None:
        for name, v in (("conv_bin", conv_bin), ("fc_bin", fc_bin)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"AdaComp {name} must be a positive int, got {v!r}")
        self.conv_bin, self.fc_bin = conv_bin, fc_bin
        self.residues: dict = {}
        self.layer_stats: dict = {}   # key -> {"shape", "bin", "numel", "selected", "bytes", "dense_bytes", "steps"}
        self.bytes = 0
        self.dense_bytes = 0

    def compress(self, key, g: torch.Tensor, shape: tuple[int, ...] | None = None) -> torch.Tensor:
        """Compress and commit (residue, statistics); returns the float32 message in ``g``'s shape."""
        step = self.peek(key, g, shape)
        self.commit(key, step, shape if shape is not None else tuple(g.shape))
        return step.sent.view(g.shape)

    def peek(self, key, g: torch.Tensor, shape: tuple[int, ...] | None = None) -> AdaCompStep:
        """The step ``compress`` would take, without changing any state."""
        shape = tuple(g.shape if shape is None else shape)
        return adacomp_compress(g, self.residues.get(key), bin_length_for(shape, self.conv_bin, self.fc_bin))

    def commit(self, key, step: AdaCompStep, shape: tuple[int, ...]) -> None:
        """Keep ``step``'s residue for ``key`` and add it to the statistics."""
        shape = tuple(shape)
        self.residues[key] = step.residue
        s = self.layer_stats.setdefault(key, {"shape": list(shape), "bin": bin_length_for(shape, self.conv_bin,
                                                                                             self.fc_bin),
                                              "numel": step.numel, "selected": 0, "bytes": 0, "dense_bytes": 0,
                                              "steps": 0, "forced": 0})
        s["selected"] += step.selected
        s["bytes"] += step.bytes
        s["dense_bytes"] += step.dense_bytes
        s["forced"] += step.forced
        s["steps"] += 1
        self.bytes += step.bytes
        self.dense_bytes += step.dense_bytes

    def summary(self) -> list[dict]:
        """Per layer: shape, bin length, mean selection rate and compression ratio (dense / compressed bytes)."""
        out = []
        for key, s in self.layer_stats.items():
            out.append({"layer": str(key), "shape": s["shape"], "bin": s["bin"], "numel": s["numel"],
                        "rate": s["selected"] / max(1, s["numel"] * s["steps"]),
                        "compression_ratio": s["dense_bytes"] / max(1, s["bytes"]),
                        "forced": s["forced"], "steps": s["steps"]})
        return out
