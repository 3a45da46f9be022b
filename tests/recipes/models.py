"""A tiny model with every GEMM-like op lowp emulates (Embedding, Conv1d, attention Matmuls, Conv2d, Linear)."""
import torch
from torch import nn

import lowp


class AllOps(nn.Module):
    def __init__(self, vocab: int = 20, d: int = 8, t: int = 8, out: int = 5) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.conv1 = nn.Conv1d(d, d, 3, padding=1)
        self.qk = lowp.Matmul()
        self.pv = lowp.Matmul()
        self.norm = nn.LayerNorm(d)
        self.conv2 = nn.Conv2d(1, 2, 3, padding=1)
        self.fc = nn.Linear(2 * t * d, 16)
        self.head = nn.Linear(16, out)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        h = self.emb(idx).transpose(1, 2)                        # (B, d, T)
        h = torch.relu(self.conv1(h)).transpose(1, 2)            # (B, T, d)
        a = torch.softmax(self.qk(h, h.transpose(1, 2)) / 3, -1)  # (B, T, T)
        h = self.norm(self.pv(a, h) + h)                         # (B, T, d)
        h = torch.relu(self.conv2(h.unsqueeze(1)))               # (B, 2, T, d)
        return self.head(torch.relu(self.fc(h.flatten(1))))


GEMM_LAYERS = ["emb", "conv1", "qk", "pv", "conv2", "fc", "head"]
