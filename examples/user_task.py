"""Your own model and data under ``lowp compare``, without registering anything:

    lowp compare --task examples.user_task:make_task --recipes fp32,bf16,fp8-hybrid --out my-compare
    lowp compare --task examples/user_task.py:make_task ...        # a file path works too

``make_task()`` returns a :class:`lowp.experiments.Task`. What this example shows, each as a user would have it:

- **a model that returns an HF-style output**: ``Waveforms.forward`` returns an object with ``.logits`` and, when
  called with ``labels=``, ``.loss`` (as Hugging Face models do). With ``pass_labels=True`` the training loop
  calls ``model(x, labels=y)`` and trains on the model's own ``.loss``; the metric sees ``.logits``;
- **a torch Dataset**: ``WaveformDataset`` generates its samples on access (nothing is held in memory as one
  tensor); ``StreamData(train, test)`` streams it batch by batch;
- **a metric with a direction**: the test error rate (a fraction; lower is better), declared with
  ``higher_is_better=False``. The compare table, plots, ranking and "within N points" lines follow it.

The task: tell which of 4 waveforms (sine, square, triangle, sawtooth) a noisy 64-sample signal with a random
frequency and phase is; a 1-D CNN classifies it.
"""
from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn
import torch.nn.functional as F
from torch.utils.data import Dataset

from lowp.experiments import StreamData, Task

LENGTH, CLASSES = 64, 4


class WaveformDataset(Dataset):
    """``n`` noisy waveforms; sample ``i`` is generated from seed ``seed + i`` (the same on every access)."""

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed = n, seed

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not 0 <= i < self.n:
            raise IndexError(i)
        g = torch.Generator().manual_seed(self.seed + i)
        label = int(torch.randint(CLASSES, (), generator=g))
        freq = 1.0 + 3.0 * float(torch.rand((), generator=g))
        phase = float(torch.rand((), generator=g))
        t = torch.arange(LENGTH) / LENGTH * freq + phase
        frac = t - t.floor()
        wave = [torch.sin(2 * math.pi * t), torch.sign(torch.sin(2 * math.pi * t)), 4 * (frac - 0.5).abs() - 1,
                2 * frac - 1][label]
        return wave + 0.3 * torch.randn(LENGTH, generator=g), torch.tensor(label)


@dataclasses.dataclass
class Output:
    """What the model returns, shaped like an HF ``ModelOutput``."""

    logits: torch.Tensor
    loss: torch.Tensor | None = None


class Waveforms(nn.Module):
    """conv(7) → ReLU → conv(5, stride 2) → ReLU → global average → linear; ``labels`` gives ``.loss``."""

    def __init__(self, channels: int = 16) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(1, channels, 7, padding=3)
        self.conv2 = nn.Conv1d(channels, channels, 5, stride=2, padding=2)
        self.head = nn.Linear(channels, CLASSES)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> Output:
        h = F.relu(self.conv2(F.relu(self.conv1(x.unsqueeze(1)))))
        logits = self.head(h.mean(-1))
        return Output(logits, None if labels is None else F.cross_entropy(logits, labels))


def error_counts(logits: torch.Tensor, y: torch.Tensor) -> tuple[int, int]:
    """(wrong, counted): summed over the test batches, the metric is the error rate."""
    return int((logits.argmax(-1) != y).sum()), len(y)


def load_data() -> StreamData:
    return StreamData(WaveformDataset(2048, seed=0), WaveformDataset(512, seed=1_000_000))


def make_task() -> Task:
    """The task ``lowp compare --task examples.user_task:make_task`` runs."""
    return Task("waveforms", Waveforms, load_data, metric_name="error", higher_is_better=False,
                metric_counts=error_counts, pass_labels=True, epochs=3, optimizer="adam", lr=1e-2, batch_size=64,
                description="4 noisy waveforms, 1-D CNN; test error rate (lower is better)")
