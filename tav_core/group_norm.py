"""GroupNorm pooled over all frames of a video, as the reference's 3D ResNet blocks do.

The reference applies torch.nn.GroupNorm to (b, c, f, h, w) tensors, so the statistics of each
channel group are shared by every frame of a video: an implicit cross-frame coupling that keeps
brightness and colour steady. A frames-as-batch UNet would normalise each frame alone.
"""

from collections.abc import Callable

import torch

from .video_batch import as_videos

NormFn = Callable[[torch.Tensor], torch.Tensor]


def group_norm_per_video(x: torch.Tensor, videos: int, norm: NormFn) -> torch.Tensor:
    """Apply `norm` (a GroupNorm accepting (N, C, *)) to (videos*frames, C, H, W) as (videos, C, frames, H, W)."""
    video_first = as_videos(x, videos).transpose(1, 2)  # (v, c, f, h, w)
    out = norm(video_first)
    return out.transpose(1, 2).reshape(x.shape)
