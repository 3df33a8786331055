"""AnimateDiff's motion modules, laid out exactly as its files hold them.

One module (a "VanillaTemporalModule") follows a UNet layer: a per-frame GroupNorm, a projection in,
a transformer block of two temporal self-attentions (each frame attends to every frame of its video
at the same spatial position, with the frame index added as a sinusoid after the block's LayerNorm)
and a GEGLU feed-forward, a projection out, and a residual around it all. With the output
projection at zero the module is an exact identity, which is how AnimateDiff trains it from scratch.
State-dict keys are the released files' keys, so a file loads with load_state_dict as it is.
"""

from dataclasses import dataclass
from types import ModuleType

import torch
from einops import rearrange
from torch import nn

from .frame_attention import AttentionFn, sdpa_attention
from .group_norm import group_norm_per_video
from .temporal_attention import sinusoidal_position_encoding
from .video_batch import frames_per_video

HEADS = 8
COMPUTED_TABLE_ROWS = 64  # files without a table: AnimateLCM's code builds 64 rows (so does AnimateDiff-Evolved)
GROUPS = 32
GROUP_NORM_EPS = 1e-6
FEED_FORWARD_MULT = 4


class FramesOverTable(ValueError):
    """More frames than a motion module's position table can index."""

    def __init__(self, frames: int, table: int) -> None:
        super().__init__(f"{frames} frames per video, but its position table has {table} rows")
        self.frames, self.table = frames, table


class PositionTable(nn.Module):
    """The sinusoidal frame-index table ("pe", shape [1, L, C]), added to the attention's input.

    Files without a table (AnimateLCM-style) get the same sinusoid computed, for up to COMPUTED_TABLE_ROWS frames.
    """

    def __init__(self, dim: int, length: int | None, dtype: torch.dtype | None, device: torch.device | None) -> None:
        super().__init__()
        self.dim, self.length = dim, length
        if length is not None:
            self.register_buffer("pe", torch.empty(1, length, dim, dtype=dtype, device=device))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        frames = x.shape[1]
        rows = self.length or COMPUTED_TABLE_ROWS
        if frames > rows:
            raise FramesOverTable(frames, rows)
        if self.length is None:
            return x + sinusoidal_position_encoding(frames, self.dim, x.device, x.dtype)
        return x + self.pe[:, :frames].to(x.dtype)


class MotionAttention(nn.Module):
    """Temporal self-attention: (n, frames, c) sequences, one per video and spatial position."""

    def __init__(self, dim: int, table: int | None, ops: ModuleType | type, dtype, device) -> None:
        super().__init__()
        self.to_q = ops.Linear(dim, dim, bias=False, dtype=dtype, device=device)
        self.to_k = ops.Linear(dim, dim, bias=False, dtype=dtype, device=device)
        self.to_v = ops.Linear(dim, dim, bias=False, dtype=dtype, device=device)
        self.to_out = nn.ModuleList([ops.Linear(dim, dim, dtype=dtype, device=device)])
        self.pos_encoder = PositionTable(dim, table, dtype, device)

    def forward(self, x: torch.Tensor, attention: AttentionFn) -> torch.Tensor:
        x = self.pos_encoder(x)
        return self.to_out[0](attention(self.to_q(x), self.to_k(x), self.to_v(x), HEADS))


class GEGLU(nn.Module):
    def __init__(self, dim: int, inner: int, ops: ModuleType | type, dtype, device) -> None:
        super().__init__()
        self.proj = ops.Linear(dim, inner * 2, dtype=dtype, device=device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden, gate = self.proj(x).chunk(2, dim=-1)
        return hidden * nn.functional.gelu(gate)


class FeedForward(nn.Module):
    def __init__(self, dim: int, ops: ModuleType | type, dtype, device) -> None:
        super().__init__()
        inner = dim * FEED_FORWARD_MULT
        # net.1 is the original's (zero) dropout: kept so that net.2 keeps its key.
        self.net = nn.ModuleList([
            GEGLU(dim, inner, ops, dtype, device), nn.Identity(), ops.Linear(inner, dim, dtype=dtype, device=device),
        ])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.net:
            x = layer(x)
        return x


class MotionTransformerBlock(nn.Module):
    def __init__(self, dim: int, table: int | None, ops, dtype, device) -> None:
        super().__init__()
        self.attention_blocks = nn.ModuleList(
            [MotionAttention(dim, table, ops, dtype, device) for _ in range(2)]
        )
        self.norms = nn.ModuleList([ops.LayerNorm(dim, dtype=dtype, device=device) for _ in range(2)])
        self.ff = FeedForward(dim, ops, dtype, device)
        self.ff_norm = ops.LayerNorm(dim, dtype=dtype, device=device)

    def forward(self, h: torch.Tensor, attention: AttentionFn) -> torch.Tensor:
        for block, norm in zip(self.attention_blocks, self.norms, strict=True):
            h = block(norm(h), attention) + h
        return self.ff(self.ff_norm(h)) + h


def memory_format_of(x: torch.Tensor) -> torch.memory_format:
    channels_last = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    return torch.channels_last if channels_last else torch.contiguous_format


class TemporalTransformer(nn.Module):
    def __init__(self, dim: int, table: int | None, norm_over_frames: bool, ops, dtype, device) -> None:
        super().__init__()
        self.norm_over_frames = norm_over_frames
        self.norm = ops.GroupNorm(GROUPS, dim, eps=GROUP_NORM_EPS, affine=True, dtype=dtype, device=device)
        self.proj_in = ops.Linear(dim, dim, dtype=dtype, device=device)
        self.transformer_blocks = nn.ModuleList([MotionTransformerBlock(dim, table, ops, dtype, device)])
        self.proj_out = ops.Linear(dim, dim, dtype=dtype, device=device)

    def forward(self, x: torch.Tensor, videos: int, attention: AttentionFn) -> torch.Tensor:
        """x: (videos*frames, c, h, w), each video's frames contiguous -> same shape."""
        _, _, height, width = x.shape
        normed = group_norm_per_video(x, videos, self.norm) if self.norm_over_frames else self.norm(x)
        h = rearrange(normed, "b c h w -> b (h w) c")
        h = self.proj_in(h)
        h = rearrange(h, "(v f) n c -> (v n) f c", f=frames_per_video(x.shape[0], videos))
        for block in self.transformer_blocks:
            h = block(h, attention)
        h = rearrange(h, "(v n) f c -> (v f) n c", v=videos)
        h = rearrange(self.proj_out(h), "b (h w) c -> b c h w", h=height, w=width)
        # In x's memory layout: the UNet's next convolutions then run (and round) as they would without the module.
        return x + h.contiguous(memory_format=memory_format_of(x))


class TemporalModule(nn.Module):
    """One motion module (AnimateDiff's VanillaTemporalModule)."""

    def __init__(self, dim: int, table: int | None, norm_over_frames: bool, ops, dtype, device) -> None:
        super().__init__()
        self.temporal_transformer = TemporalTransformer(dim, table, norm_over_frames, ops, dtype, device)

    def forward(self, x: torch.Tensor, videos: int, attention: AttentionFn = sdpa_attention) -> torch.Tensor:
        return self.temporal_transformer(x, videos, attention)


class MotionBlock(nn.Module):
    def __init__(self, modules: list[TemporalModule]) -> None:
        super().__init__()
        self.motion_modules = nn.ModuleList(modules)


@dataclass(frozen=True)
class MotionLayout:
    """The channel width of every module, per block, as a file holds them."""

    down: tuple[tuple[int, ...], ...]
    up: tuple[tuple[int, ...], ...]
    mid: int | None
    table: int | None  # rows of the position table; None: no table in the file (the sinusoid, computed)
    norm_over_frames: bool = False  # the module's GroupNorm pools over a video's frames (AnimateDiff's SDXL code)

    def module_count(self) -> int:
        return sum(map(len, self.down)) + sum(map(len, self.up)) + (self.mid is not None)


class MotionModules(nn.Module):
    """Every motion module of one file: down_blocks.i / up_blocks.i / mid_block . motion_modules.j."""

    def __init__(
        self, layout: MotionLayout, ops: ModuleType | type = nn,
        dtype: torch.dtype | None = None, device: torch.device | None = None,
    ) -> None:
        super().__init__()
        self.layout = layout

        def block(widths: tuple[int, ...]) -> MotionBlock:
            return MotionBlock([
                TemporalModule(dim, layout.table, layout.norm_over_frames, ops, dtype, device) for dim in widths
            ])

        self.down_blocks = nn.ModuleList([block(widths) for widths in layout.down])
        self.up_blocks = nn.ModuleList([block(widths) for widths in layout.up])
        self.mid_block = block((layout.mid,)) if layout.mid is not None else None

    def named_motion_modules(self) -> list[tuple[str, TemporalModule]]:
        """('down_blocks.0.motion_modules.1', module), ... in the file's naming."""
        named = []
        for group in ("down_blocks", "up_blocks"):
            for i, blk in enumerate(getattr(self, group)):
                named += [(f"{group}.{i}.motion_modules.{j}", m) for j, m in enumerate(blk.motion_modules)]
        if self.mid_block is not None:
            named.append(("mid_block.motion_modules.0", self.mid_block.motion_modules[0]))
        return named
