"""Tune-A-Video's temporal self-attention: a new layer after each transformer block's feed-forward.

At every spatial position, the frames of one video attend to each other:
(v f) n c -> (v n) f c, pre-norm LayerNorm, self-attention, back, residual. The output projection
is zero-initialised (weight and bias), so a freshly inflated model is exactly the image model's
per-frame function apart from the attn1 change.
"""

import math
from types import ModuleType

import torch
from einops import rearrange
from torch import nn

from .frame_attention import AttentionFn, sdpa_attention
from .inflation_config import PositionEncoding


def sinusoidal_position_encoding(frames: int, dim: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """AnimateDiff's (Transformer's) sin/cos encoding of frame index, shape (frames, dim)."""
    position = torch.arange(frames, device=device, dtype=torch.float32).unsqueeze(1)
    div_term = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    pe = torch.zeros(frames, dim, device=device, dtype=torch.float32)
    pe[:, 0::2] = torch.sin(position * div_term)
    pe[:, 1::2] = torch.cos(position * div_term[: dim // 2])
    return pe.to(dtype)


class TemporalAttention(nn.Module):
    """Pre-norm residual self-attention over the frame axis at each spatial position."""

    def __init__(
        self,
        dim: int,
        heads: int,
        dim_head: int,
        position_encoding: PositionEncoding,
        operations: ModuleType | type = nn,
        dtype: torch.dtype | None = None,
        device: torch.device | None = None,
    ) -> None:
        super().__init__()
        inner = heads * dim_head
        self.heads = heads
        self.position_encoding = PositionEncoding(position_encoding)
        self.norm = operations.LayerNorm(dim, dtype=dtype, device=device)
        self.to_q = operations.Linear(dim, inner, bias=False, dtype=dtype, device=device)
        self.to_k = operations.Linear(dim, inner, bias=False, dtype=dtype, device=device)
        self.to_v = operations.Linear(dim, inner, bias=False, dtype=dtype, device=device)
        self.to_out = operations.Linear(inner, dim, dtype=dtype, device=device)

    @torch.no_grad()
    def initialize(self, generator: torch.Generator) -> None:
        """Reference init (nn.Linear defaults for q/k/v) with an exactly-zero output projection."""
        self.norm.weight.fill_(1.0)
        self.norm.bias.zero_()
        for linear in (self.to_q, self.to_k, self.to_v):
            nn.init.kaiming_uniform_(linear.weight, a=math.sqrt(5), generator=generator)
        self.to_out.weight.zero_()
        self.to_out.bias.zero_()

    def is_identity(self) -> bool:
        """Whether the layer adds nothing (a zero output projection): fresh from initialize, never tuned."""
        return not (bool(self.to_out.weight.any()) or bool(self.to_out.bias.any()))

    @torch.no_grad()
    def reference_output_bias(self, generator: torch.Generator) -> None:
        """The reference zero-initialises only to_out's weight; its bias keeps nn.Linear's default init,
        U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
        bound = 1 / math.sqrt(self.to_out.in_features)
        drawn = torch.empty(self.to_out.bias.shape).uniform_(-bound, bound, generator=generator)  # on the CPU
        self.to_out.bias.copy_(drawn)

    def forward(self, x: torch.Tensor, videos: int, attention: AttentionFn = sdpa_attention) -> torch.Tensor:
        """x: (videos*frames, tokens, dim) -> same shape."""
        h = rearrange(x, "(v f) n c -> (v n) f c", v=videos)
        normed = self.norm(h)
        if self.position_encoding == PositionEncoding.SINUSOIDAL:
            normed = normed + sinusoidal_position_encoding(h.shape[1], h.shape[2], h.device, h.dtype)
        out = attention(self.to_q(normed), self.to_k(normed), self.to_v(normed), self.heads)
        h = h + self.to_out(out)
        return rearrange(h, "(v n) f c -> (v f) n c", v=videos)
