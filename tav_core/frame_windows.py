"""Overlapping windows of consecutive frames, and the blend that joins their outputs into one clip.

A long clip runs through the UNet a window at a time, so memory follows the window. Windows are spaced
`window - overlap` apart, the last one ending at the clip's last frame; where windows overlap, each frame's
output is the weighted mean of the windows holding it, the weights ramping down towards each window's edges
that lie inside the clip, so neighbouring windows cross-fade instead of meeting at a seam.
"""

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class FrameWindow:
    start: int
    stop: int

    @property
    def frames(self) -> range:
        return range(self.start, self.stop)


def frame_windows(frames: int, window: int, overlap: int) -> list[FrameWindow]:
    """Windows covering `frames` frames, the first starting at frame 0; one window where window >= frames."""
    if window <= 0 or window >= frames:
        return [FrameWindow(0, frames)]
    if not 0 <= overlap < window:
        raise ValueError(f"overlap {overlap} must be at least 0 and below the window ({window})")
    stride = window - overlap
    starts = list(range(0, frames - window, stride)) + [frames - window]
    return [FrameWindow(start, start + window) for start in starts]


def blend_weights(window: FrameWindow, frames: int, overlap: int) -> torch.Tensor:
    """(window frames,) weights: linear ramps of overlap+1 steps at the edges shared with a neighbour, else 1."""
    length = window.stop - window.start
    weights = torch.ones(length, dtype=torch.float64)
    ramp = torch.arange(1, min(overlap, length) + 1, dtype=torch.float64) / (overlap + 1)
    if window.start > 0:
        weights[: len(ramp)] = torch.minimum(weights[: len(ramp)], ramp)
    if window.stop < frames:
        weights[length - len(ramp):] = torch.minimum(weights[length - len(ramp):], ramp.flip(0))
    return weights


class WindowBlend:
    """Accumulates per-window outputs of (videos, frames, ...) shape into the blended whole."""

    def __init__(self, frames: int, overlap: int) -> None:
        self.frames = frames
        self.overlap = overlap
        self.total: torch.Tensor | None = None  # the weighted sum, in fp32
        self.weight = torch.zeros(frames, dtype=torch.float64)

    def add(self, window: FrameWindow, output: torch.Tensor) -> None:
        """output: (videos, window frames, ...) for the frames of `window`."""
        weights = blend_weights(window, self.frames, self.overlap)
        if self.total is None:
            self.total = output.new_zeros((output.shape[0], self.frames, *output.shape[2:]), dtype=torch.float32)
        shape = (1, -1) + (1,) * (output.dim() - 2)
        self.total[:, window.start:window.stop] += output.float() * weights.to(output.device, torch.float32).view(shape)
        self.weight[window.start:window.stop] += weights

    def result(self, dtype: torch.dtype) -> torch.Tensor:
        shape = (1, -1) + (1,) * (self.total.dim() - 2)
        return (self.total / self.weight.to(self.total.device, torch.float32).view(shape)).to(dtype)
