"""Language modelling on real text, offline (docs/architecture.md): the tasks ``tiny-gpt`` and ``tiny-gpt-hf``.

Text: ``pydoc_data.topics`` (the Python language reference that ships with every Python install; 79 topics, 464,970
characters), its strings concatenated in sorted-key order and UTF-8 encoded: 466,117 bytes, byte-level tokens
(vocabulary 256). Fixed split: the first 90% of the bytes train (419,506), the last 10% (46,611) validate.

Training windows: ``CONTEXT`` bytes starting at any position of the training part, drawn at random (a permutation
of all start positions per epoch, seeded by the run's seed) and cut to ``STEPS_PER_EPOCH`` batches per epoch.
Validation: the non-overlapping ``CONTEXT``-byte windows of the validation part (46,611 bytes), in order (728
windows, 46,592 predicted bytes). Metric: validation loss, the mean cross-entropy in nats per byte (lower is
better; a uniform guess over the 107 byte values present is ln 107 ≈ 4.67).
"""
from __future__ import annotations

import functools
import importlib.util

import torch
from torch import nn
import torch.nn.functional as F
from torch.utils.data import Dataset

from .data import StreamData
from .models import DecoderBlock
from .tasks import Task, token_loss_counts

VOCAB = 256            # byte-level
CONTEXT = 64           # tokens per training / validation window
VAL_FRACTION = 0.1     # the last 10% of the text validates
STEPS_PER_EPOCH = 100
D_MODEL, HEADS, LAYERS = 64, 4, 2


@functools.lru_cache(maxsize=None)
def pydoc_tokens() -> torch.Tensor:
    """The bytes of ``pydoc_data.topics`` (values concatenated in sorted-key order, UTF-8) as int64 tokens."""
    from pydoc_data.topics import topics

    text = "".join(topics[k] for k in sorted(topics)).encode("utf-8")
    return torch.frombuffer(bytearray(text), dtype=torch.uint8).to(torch.int64)


def text_split(tokens: torch.Tensor | None = None, val_fraction: float = VAL_FRACTION
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, validation) tokens: the first ``1 − val_fraction`` of the text and the rest, no shuffling."""
    tokens = pydoc_tokens() if tokens is None else tokens
    cut = len(tokens) - int(len(tokens) * val_fraction)
    return tokens[:cut], tokens[cut:]


class WindowDataset(Dataset):
    """Next-token windows of a token stream: item ``i`` is ``(t[s:s+context], t[s+1:s+context+1])`` with
    ``s = i * stride`` (stride 1: every start position; stride ``context``: non-overlapping windows)."""

    def __init__(self, tokens: torch.Tensor, context: int, stride: int = 1) -> None:
        if len(tokens) < context + 1:
            raise ValueError(f"a window of {context} tokens needs at least {context + 1} tokens, got {len(tokens)}")
        self.tokens, self.context, self.stride = tokens, context, stride
        self._n = (len(tokens) - context - 1) // stride + 1
        self._offsets = torch.arange(context + 1)

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not -self._n <= i < self._n:
            raise IndexError(f"window {i} out of range for {self._n} windows")
        s = (i % self._n) * self.stride
        w = self.tokens[s:s + self.context + 1]
        return w[:-1], w[1:]

    def __getitems__(self, ids: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Many windows with one gather (what ``DataLoader`` and the training loop call for a batch)."""
        w = self.tokens[torch.tensor(ids, dtype=torch.int64)[:, None] * self.stride + self._offsets]
        return list(zip(w[:, :-1], w[:, 1:]))


@functools.lru_cache(maxsize=None)
def pydoc_data(context: int = CONTEXT) -> StreamData:
    """Training windows at every start position of the training part; non-overlapping validation windows."""
    train, val = text_split()
    return StreamData(WindowDataset(train, context, 1), WindowDataset(val, context, context))


# ------------------------------------------------------------------------------------------------------- model

class SDPAttention(nn.Module):
    """Multi-head causal self-attention: fused q/k/v projection, ``F.scaled_dot_product_attention(q, k, v,
    is_causal=True)``, output projection (plain torch calls: emulation reaches them by capturing the functions)."""

    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        if d % heads:
            raise ValueError(f"d_model {d} is not a multiple of heads {heads}")
        self.heads = heads
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).reshape(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(y.transpose(1, 2).reshape(b, t, d))


class TinyGPT(nn.Module):
    """Decoder-only transformer (GPT-2 layout): token + learned position embeddings, ``layers`` pre-norm blocks,
    final LayerNorm, linear head to ``vocab`` logits. Weights N(0, 0.02), biases 0, LayerNorm (1, 0) as GPT-2
    initialises them (Radford et al. 2019)."""

    def __init__(self, vocab: int = VOCAB, d: int = D_MODEL, heads: int = HEADS, layers: int = LAYERS,
                 context: int = CONTEXT) -> None:
        super().__init__()
        self.context = context
        self.tok, self.pos = nn.Embedding(vocab, d), nn.Embedding(context, d)
        self.blocks = nn.Sequential(*[DecoderBlock(d, heads, SDPAttention) for _ in range(layers)])
        self.ln = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab)
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=0.02)
            if isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        if idx.shape[1] > self.context:
            raise ValueError(f"sequence of {idx.shape[1]} tokens exceeds the context of {self.context}")
        pos = torch.arange(idx.shape[1], device=idx.device)
        return self.head(self.ln(self.blocks(self.tok(idx) + self.pos(pos))))


def hf_gpt2(vocab: int = VOCAB, d: int = D_MODEL, heads: int = HEADS, layers: int = LAYERS,
            context: int = CONTEXT) -> nn.Module:
    """A Hugging Face ``GPT2LMHeadModel`` of the same size as :class:`TinyGPT`, built from a ``GPT2Config``
    (random init, nothing downloaded; dropout 0; SDPA attention; token embedding tied to the head as in GPT-2)."""
    try:
        from transformers import GPT2Config, GPT2LMHeadModel
    except ImportError as e:
        raise ValueError(f"task 'tiny-gpt-hf' needs transformers ({e}); install it with: pip install "
                         "'lowp[hf]'") from None
    cfg = GPT2Config(vocab_size=vocab, n_positions=context, n_embd=d, n_layer=layers, n_head=heads,
                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0)
    cfg._attn_implementation = "sdpa"
    return GPT2LMHeadModel(cfg)


# ------------------------------------------------------------------------------------------------------- tasks

_COMMON = dict(metric_name="val_loss", metric_unit="nats/token", higher_is_better=False,
               metric_counts=token_loss_counts, optimizer="adam", epochs=5, lr=3e-3, warmup_steps=50,
               batch_size=32, steps_per_epoch=STEPS_PER_EPOCH, eval_batch_size=128, load_data=pydoc_data)


def tiny_gpt_task() -> Task:
    """``tiny-gpt``: :class:`TinyGPT` (d_model 64, 4 heads, 2 layers, context 64, byte vocabulary; 137,216
    parameters) on ``pydoc_data.topics`` bytes (419,506 training tokens, 46,611 validation tokens), Adam lr 3e-3
    with 50 warm-up steps then cosine, batch 32 windows of 64 tokens, 5 epochs of 100 steps (1,024,000 training
    tokens, about 2.4 passes over the training text). Metric: validation loss in nats/token (lower is better).

    Measured here (2 CPU cores shared with other agents' jobs, so times are noisy): FP32 ends at a validation loss
    of 1.8695 nats/token (seed 0; the same bits with 1 and 2 torch threads) and trains in 17.6 s.
    ``OMP_NUM_THREADS=1 lowp compare --task tiny-gpt --recipes fp32,bf16,fp8-hybrid,fp8-e5m2`` took 137 s in all
    (fp32 17.6 s, bf16 23.5 s, fp8-hybrid 37.4 s, fp8-e5m2 54.9 s; emulation of the ``nn.Linear``/``nn.Embedding``
    modules only); with torch's default 2 threads while the machine was loaded (load average 4-10) each recipe took
    220-300 s. BF16 ends within 2% of FP32: 1.9004 (+1.65%) with 1 thread, 1.8525 (-0.91%) with 2 threads (its
    rounding sees another accumulation order); seed 1: FP32 1.8247, BF16 1.8255 (+0.04%). The FP8 recipes move
    as much between thread counts (fp8-hybrid 1.8496 and 2.0045): compare recipes over seeds before reading
    differences of a few percent."""
    return Task("tiny-gpt", TinyGPT, description="decoder-only transformer (d 64, 2 layers, ctx 64) on "
                "pydoc_data.topics bytes, validation loss", **_COMMON)


def tiny_gpt_hf_task() -> Task:
    """``tiny-gpt-hf``: the data, split, metric and hyper-parameters of ``tiny-gpt`` on a Hugging Face
    ``GPT2LMHeadModel`` of the same size built from a ``GPT2Config`` (:func:`hf_gpt2`; needs ``transformers``,
    the ``hf`` extra). Its output is a ``CausalLMOutput``: the loop takes its ``.logits``. 120,576 parameters (the
    head is tied to the token embedding). Measured here (1 thread, shared machine): FP32 trains in 25 s and ends at
    a validation loss of 1.9057 nats/token (seed 0)."""
    if importlib.util.find_spec("transformers") is None:
        raise ValueError("task 'tiny-gpt-hf' needs transformers; install it with: pip install 'lowp[hf]'")
    return Task("tiny-gpt-hf", hf_gpt2, description="HF GPT2LMHeadModel from a config (d 64, 2 layers, ctx 64) "
                "on pydoc_data.topics bytes, validation loss", **_COMMON)
