"""Make-A-Video's pseudo-3D convolution: after a 2-D convolution, a 1-D convolution over the frames.

At each spatial position of a video, its (channels, frames) signal goes through Conv1d(C, C, 3, padding 1):
zeros beyond the clip's first and last frame, as Make-A-Video pads. The batch holds `videos` videos of equal
length back to back (tav_core.video_batch) and the convolution runs within each video, so no frame ever sees
another video's frames.

Stored as a residual, out = x + delta(x), with `delta` a Conv1d whose weight and bias start at zero. That is
Make-A-Video's Dirac-initialised convolution (its weight is dirac + delta.weight, its bias delta.bias: see
conv_weight), but an exact identity by construction on every backend: a Dirac convolution returns 1 * x exactly
only where it is computed as plain multiply-adds at full precision, not under TF32 (on by default for cuDNN
convolutions) nor with Winograd or FFT algorithms, whereas zero weights give exactly zero under all of them.
The residual also survives fp16 files (a tuned 1 + 1e-4 rounds to 1 in fp16, 1e-4 does not) and makes AdamW's
weight decay pull towards the identity instead of towards zero.
"""

from types import ModuleType

import torch
from einops import rearrange
from torch import nn

from .motion_module import memory_format_of
from .video_batch import frames_per_video

KERNEL = 3


class TemporalConv(nn.Module):
    """The 1-D convolution over frames that follows one 2-D convolution of `channels` output channels."""

    def __init__(
        self, channels: int, operations: ModuleType | type = nn,
        dtype: torch.dtype | None = None, device: torch.device | None = None,
    ) -> None:
        super().__init__()
        self.delta = operations.Conv1d(channels, channels, KERNEL, padding=KERNEL // 2, dtype=dtype, device=device)

    @torch.no_grad()
    def initialize(self) -> None:
        """The identity: a zero residual (ComfyUI's layers are created uninitialised)."""
        self.delta.weight.zero_()
        self.delta.bias.zero_()

    def conv_weight(self) -> torch.Tensor:
        """The weight of the equivalent plain Conv1d (Make-A-Video's layout; its bias is delta.bias)."""
        return nn.init.dirac_(torch.empty_like(self.delta.weight)) + self.delta.weight

    def forward(self, x: torch.Tensor, videos: int) -> torch.Tensor:
        """x: (videos*frames, C, H, W), each video's frames contiguous -> same shape, in x's memory format."""
        _, _, height, width = x.shape
        h = rearrange(x, "(v f) c h w -> (v h w) c f", f=frames_per_video(x.shape[0], videos))
        h = rearrange(self.delta(h), "(v h w) c f -> (v f) c h w", h=height, w=width)
        # In x's memory layout: the UNet's next layers then run (and round) as they would without the convolution.
        return x + h.contiguous(memory_format=memory_format_of(x))
