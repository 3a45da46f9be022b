"""The models of the built-in tasks (``lowp.experiments.tasks``): MLPs, a 1-D CNN for MNIST-1D, a small residual
CNN for 8×8 digits and a tiny causal transformer decoder whose attention products are ``lowp.ops.Matmul`` modules
(so recipes emulate them)."""
from __future__ import annotations

import math

import torch
from torch import nn
import torch.nn.functional as F

from .data import SORT_LEN, SORT_VOCAB


def mlp(sizes: tuple[int, ...]) -> nn.Module:
    """Linear/ReLU stack."""
    layers: list[nn.Module] = [nn.Flatten()]
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def mnist1d_cnn(channels: int = 32) -> nn.Module:
    """1-D CNN for length-40 signals: conv(5, stride 2) → conv(3) → pool → conv(3) → pool → linear."""
    c = channels
    return nn.Sequential(
        nn.Unflatten(1, (1, 40)),
        nn.Conv1d(1, c, 5, 2, 2), nn.ReLU(),
        nn.Conv1d(c, c, 3, 1, 1), nn.ReLU(), nn.MaxPool1d(2),
        nn.Conv1d(c, c, 3, 1, 1), nn.ReLU(), nn.MaxPool1d(2),
        nn.Flatten(), nn.Linear(c * 5, 10))


class ResBlock(nn.Module):
    """conv-BN-ReLU-conv-BN plus identity, ReLU."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.conv2, self.bn2 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(x + self.bn2(self.conv2(y)))


class ResNetMini(nn.Module):
    """Residual CNN for 8×8 digits: stem conv, two residual blocks, global average pool, linear."""

    def __init__(self, c: int = 16, classes: int = 10) -> None:
        super().__init__()
        self.stem, self.bn = nn.Conv2d(1, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.blocks = nn.Sequential(ResBlock(c), ResBlock(c))
        self.head = nn.Linear(c, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(-1, 1, 8, 8)
        x = self.blocks(F.relu(self.bn(self.stem(x))))
        return self.head(x.mean(dim=(2, 3)))


def _matmul_module() -> nn.Module:
    """``lowp.ops.Matmul`` (configured by ``lowp.emulate``)."""
    from ..ops.modules import Matmul

    return Matmul()


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention whose q·kᵀ and p·v products are ``Matmul`` modules (emulated)."""

    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.h = heads
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.score = _matmul_module()
        self.mix = _matmul_module()
        self.softmax = nn.Softmax(dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).reshape(b, t, 3, self.h, d // self.h).permute(2, 0, 3, 1, 4)
        att = self.score(q, k.transpose(-1, -2)) / math.sqrt(d // self.h)
        mask = torch.ones(t, t, dtype=torch.bool, device=x.device).triu(1)
        att = self.softmax(att.masked_fill(mask, float("-inf")))
        y = self.mix(att, v).transpose(1, 2).reshape(b, t, d)
        return self.proj(y)


class DecoderBlock(nn.Module):
    """Pre-norm transformer block: x + attn(LN(x)); x + W2 GELU(W1 LN(x)) (hidden width 4d). ``attention``: the
    causal self-attention module class, built as ``attention(d, heads)``."""

    def __init__(self, d: int, heads: int, attention: type[nn.Module] | None = None) -> None:
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = (CausalSelfAttention if attention is None else attention)(d, heads)
        self.fc1, self.fc2 = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.fc2(F.gelu(self.fc1(self.ln2(x))))


class TinyDecoder(nn.Module):
    """Token + learned position embeddings, ``layers`` decoder blocks, final LayerNorm and vocabulary head."""

    def __init__(self, vocab: int = SORT_VOCAB + 1, d: int = 32, heads: int = 2, layers: int = 2,
                 max_len: int = 2 * SORT_LEN) -> None:
        super().__init__()
        self.tok, self.pos = nn.Embedding(vocab, d), nn.Embedding(max_len, d)
        self.blocks = nn.Sequential(*[DecoderBlock(d, heads) for _ in range(layers)])
        self.ln = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(idx.shape[1], device=idx.device)
        return self.head(self.ln(self.blocks(self.tok(idx) + self.pos(pos))))
