"""PACT: parameterized clipping activation (Choi et al. 2018, "PACT: Parameterized Clipping Activation for
Quantized Neural Networks").

Forward, with a learnable clipping level α > 0 and n = 2^k − 1:

    y   = clip(x, 0, α)
    y_q = round(y · n / α) · α / n                     (k-bit unsigned grid with scale α / n)

Backward (straight-through rounding, eq. 3 of the paper):

    ∂y_q/∂x = 1 for 0 ≤ x < α, else 0
    ∂y_q/∂α = 1 for x ≥ α,     else 0                  (summed over the elements α is shared by)

α is one scalar per layer (``per_channel=False``) or one per channel of dim 1 (N, C, ...) / the last dim of a 2-D
(N, C) input. Initial value: ``alpha_init="data"`` (the default) sets α on the first forward call to the
``DATA_QUANTILE`` quantile of max(x, 0) of that batch (per channel for a per-channel α; averaged over ranks
under torch.distributed), so that a short run starts from a clipping level that fits the activations; a number
(the paper's 10) starts there instead. α is kept positive in the forward pass by using max(α, 1e-6).

Regularisation: the paper puts an L2 penalty on α. Either add ``pact_penalty(model, coeff)`` = coeff/2 · Σ α²
to the loss (gradient coeff·α, like SGD weight decay coeff), or give the module ``alpha_decay`` > 0: then its
backward adds alpha_decay·α to ∂L/∂α on every call (equivalent to adding alpha_decay/2·α² to the loss once per
forward call; use it only without loss scaling, and not together with ``pact_penalty``). The recipes
(``pact-wKaK``) use ``alpha_decay`` so that any training loop regularises α.
Rounding is the shared ``lowp.formats.scaled.round_to_int`` (nearest, ties to even).
"""
from __future__ import annotations

import torch
from torch import nn

from ..formats.scaled import round_to_int
from .dorefa import check_bits

ALPHA_MIN = 1e-6
DATA_QUANTILE = 0.999  # alpha_init="data": the first batch's 99.9th percentile of max(x, 0) (our choice)


class PACTFunction(torch.autograd.Function):
    """y_q = PACT(x; α_b) with α_b already broadcastable against x."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, alpha: torch.Tensor, bits: int, decay: float) -> torch.Tensor:
        a = alpha.clamp(min=ALPHA_MIN).to(x.dtype)
        n = 2**bits - 1
        y = torch.minimum(torch.clamp(x, min=0), a)
        q = round_to_int(y * (n / a), "nearest", 32, None) * (a / n)
        ctx.save_for_backward(x, alpha)
        ctx.decay = decay
        return torch.where(torch.isnan(x), x, q)

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        x, alpha = ctx.saved_tensors
        a = alpha.to(x.dtype)
        gx = torch.where((x >= 0) & (x < a), g, torch.zeros_like(g)) if ctx.needs_input_grad[0] else None
        ga = None
        if ctx.needs_input_grad[1]:
            ga = torch.where(x >= a, g, torch.zeros_like(g)).sum_to_size(alpha.shape).to(alpha.dtype)
            if ctx.decay:
                ga = ga + ctx.decay * alpha
        return gx, ga, None, None


def pact(x: torch.Tensor, alpha: torch.Tensor, bits: int, *, channel_dim: int | None = None,
         decay: float = 0.0) -> torch.Tensor:
    """Functional PACT. ``alpha``: a scalar tensor (per layer) or a 1-D tensor of x.shape[channel_dim] entries."""
    check_bits("PACT bits", bits)
    if alpha.dim() == 0 or alpha.numel() == 1 and channel_dim is None:
        ab = alpha.reshape([1] * x.dim())
    else:
        if channel_dim is None:
            raise ValueError("per-channel alpha needs channel_dim")
        cd = channel_dim % x.dim()
        if alpha.dim() != 1 or alpha.numel() != x.shape[cd]:
            raise ValueError(f"per-channel alpha has {alpha.numel()} entries but the input has {x.shape[cd]} "
                             f"channels along dim {channel_dim} (shape {tuple(x.shape)})")
        shape = [1] * x.dim()
        shape[cd] = -1
        ab = alpha.reshape(shape)
    return PACTFunction.apply(x, ab, bits, float(decay))


class PACT(nn.Module):
    """PACT activation quantizer with a learnable ``alpha`` (one per layer, or ``channels`` of them).

    For a per-channel α the channel dim is ``channel_dim``; None means 1 for inputs of rank ≥ 3 (N, C, L...) and
    the last for rank 2 (N, C) (the QAT transform passes 1 for convolutions and −1 for Linear layers).
    """

    def __init__(self, bits: int, *, alpha_init: "float | str" = "data", channels: int | None = None,
                 alpha_decay: float = 0.0, channel_dim: int | None = None) -> None:
        super().__init__()
        self.bits = check_bits("PACT bits", bits)
        from_data = alpha_init == "data"
        if not from_data and (isinstance(alpha_init, (str, bool)) or not alpha_init > 0):
            raise ValueError(f"PACT alpha_init must be 'data' or a number > 0, got {alpha_init!r}")
        if alpha_decay < 0:
            raise ValueError(f"PACT alpha_decay must be >= 0, got {alpha_decay!r}")
        if channels is not None and (isinstance(channels, bool) or not isinstance(channels, int) or channels < 1):
            raise ValueError(f"PACT channels must be a positive int or None, got {channels!r}")
        self.per_channel = channels is not None
        self.channel_dim = channel_dim
        self.alpha_decay = float(alpha_decay)
        self.alpha = nn.Parameter(torch.full((channels,) if channels else (), 1.0 if from_data else float(alpha_init)))
        self.register_buffer("alpha_set", torch.tensor(not from_data))  # saved with the model: no re-init on load

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cd = None
        if self.per_channel:
            cd = self.channel_dim if self.channel_dim is not None else (1 if x.dim() >= 3 else -1)
        if not bool(self.alpha_set):
            self._init_from(x, cd)
        return pact(x, self.alpha, self.bits, channel_dim=cd, decay=self.alpha_decay)

    @torch.no_grad()
    def _init_from(self, x: torch.Tensor, cd: int | None) -> None:
        """α from this batch: the DATA_QUANTILE quantile of max(x, 0) (1 where that is 0)."""
        v = x.detach().float().clamp(min=0)
        if self.per_channel:
            if x.shape[cd] != self.alpha.numel():
                raise ValueError(f"per-channel alpha has {self.alpha.numel()} entries but the input has "
                                 f"{x.shape[cd]} channels along dim {cd} (shape {tuple(x.shape)})")
            v = v.movedim(cd, 0).reshape(v.shape[cd], -1)
            q = torch.quantile(v[:, :1 << 20], DATA_QUANTILE, dim=1)
        else:
            q = torch.quantile(v.reshape(-1)[: 1 << 24], DATA_QUANTILE)
        q = torch.where(q > 0, q, torch.ones_like(q))
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(q, op=dist.ReduceOp.SUM)
            q /= dist.get_world_size()
        self.alpha.copy_(q.to(self.alpha.dtype).reshape(self.alpha.shape))
        self.alpha_set.fill_(True)

    def extra_repr(self) -> str:
        return f"bits={self.bits}, per_channel={self.per_channel}, alpha_decay={self.alpha_decay}"


def pact_modules(model: nn.Module) -> dict[str, PACT]:
    """Qualified name → PACT module, in registration order."""
    return {n: m for n, m in model.named_modules() if isinstance(m, PACT)}


def pact_penalty(model: nn.Module, coeff: float) -> torch.Tensor:
    """L2 penalty on α: coeff/2 · Σ α² over every PACT module of ``model`` (0 if it has none)."""
    terms = [m.alpha.pow(2).sum() for m in pact_modules(model).values()]
    if not terms:
        return torch.zeros(())
    return 0.5 * coeff * torch.stack(terms).sum()


def pact_alphas(model: nn.Module) -> dict[str, list[float]]:
    """Qualified name of each PACT module → its current α values (a list: one entry per layer or per channel)."""
    return {n: m.alpha.detach().reshape(-1).tolist() for n, m in pact_modules(model).items()}
