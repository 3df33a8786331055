"""Frames are the batch: a UNet batch holds `videos` videos of equal length, one after another.

ComfyUI batches the chunks of one sampling step (uncond, cond, further conds) together, and each
chunk is one video, so videos = len(cond_or_uncond) and frames = batch // videos. Context windows
simply make the window the video.
"""

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar

import torch

_current_videos: ContextVar[int | None] = ContextVar("tav_current_videos", default=None)


def frames_per_video(batch: int, videos: int) -> int:
    if videos < 1 or batch % videos != 0:
        raise ValueError(
            f"Tune-A-Video: a batch of {batch} frames cannot be split into {videos} videos of equal length"
        )
    return batch // videos


def as_videos(x: torch.Tensor, videos: int) -> torch.Tensor:
    """(videos*frames, ...) -> (videos, frames, ...) without copying."""
    return x.view(videos, frames_per_video(x.shape[0], videos), *x.shape[1:])


@contextlib.contextmanager
def videos_in_batch(videos: int) -> Iterator[None]:
    """Tell layers that see no sampling options (ResNet GroupNorm) how the batch splits into videos."""
    token = _current_videos.set(videos)
    try:
        yield
    finally:
        _current_videos.reset(token)


def peek_videos() -> int | None:
    """The published video count, or None outside an inflated forward pass."""
    return _current_videos.get()


def current_videos() -> int:
    videos = _current_videos.get()
    if videos is None:
        raise RuntimeError(
            "Tune-A-Video: an inflated UNet layer ran outside an inflated UNet forward pass, "
            "so the number of videos in the batch is unknown"
        )
    return videos
