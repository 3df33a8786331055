"""Frame interpolation's pure math: where keyframes and new frames sit, RePaint's resampling walk, and the
noise blends new frames start from. No ComfyUI here, so it is testable on its own.

Both modes give (K - 1)(factor + 1) + 1 frames from K keyframes: `interpolate` puts `factor` new frames
between each pair of neighbouring keyframes (factor + 1 times the frame rate, same duration); `extend` keeps
the keyframes first and appends factor * (K - 1) new frames after the last (same frame rate, factor + 1 times
the duration).
"""

import math
from dataclasses import dataclass
from enum import Enum

import torch

MAX_FACTOR = 4


class Mode(str, Enum):
    INTERPOLATE = "interpolate"
    EXTEND = "extend"


@dataclass(frozen=True)
class NewFrame:
    position: int  # index in the output clip
    left: int  # the keyframe (index among the keyframes) it starts nearest to
    right: int | None  # the keyframe it blends towards; None past the last keyframe (blends towards fresh noise)
    weight: float  # how far from `left` towards `right` (or towards fresh noise), in (0, 1)


@dataclass(frozen=True)
class FrameLayout:
    frames: int
    key_positions: tuple[int, ...]  # output index of each keyframe, in order
    new_frames: tuple[NewFrame, ...]


def output_frames(keyframes: int, factor: int) -> int:
    return (keyframes - 1) * (factor + 1) + 1


def frame_layout(keyframes: int, factor: int, mode: Mode) -> FrameLayout:
    if keyframes < 2 or not 1 <= factor <= MAX_FACTOR:
        raise ValueError(f"{keyframes} keyframes and factor {factor}: need at least 2 keyframes, factor 1..4")
    frames = output_frames(keyframes, factor)
    if mode is Mode.INTERPOLATE:
        gap = factor + 1
        new = tuple(
            NewFrame(k * gap + j, k, k + 1, j / gap) for k in range(keyframes - 1) for j in range(1, gap)
        )
        return FrameLayout(frames, tuple(k * gap for k in range(keyframes)), new)
    added = frames - keyframes
    last = keyframes - 1
    new = tuple(NewFrame(last + j, last, None, j / (added + 1)) for j in range(1, added + 1))
    return FrameLayout(frames, tuple(range(keyframes)), new)


def repaint_moves(steps: int, resample: int) -> list[tuple[int, int]]:
    """The walk over sigma indices 0 (noisiest) .. steps (clean): each step i -> i + 1 is followed by `resample`
    jump-backs (re-noise i + 1 -> i, denoise again), RePaint's resampling with jump length 1, so that the new
    frames are harmonised with the held keyframes more than once per noise level."""
    moves = []
    for i in range(steps):
        moves.append((i, i + 1))
        for _ in range(resample):
            moves += [(i + 1, i), (i, i + 1)]
    return moves


def renoise(x: torch.Tensor, sigma_from: float, sigma_to: float, noise: torch.Tensor) -> torch.Tensor:
    """x = x0 + sigma_from * eps, forward-noised to sigma_to > sigma_from (ComfyUI's x0 + sigma * noise space)."""
    return x + math.sqrt(sigma_to**2 - sigma_from**2) * noise


def slerp(a: torch.Tensor, b: torch.Tensor, weight: float) -> torch.Tensor:
    """Spherical blend of two noise tensors: a plain average of independent Gaussians has too little variance (half
    at the midpoint) and samples blurry; slerp keeps the norm whether a and b are independent or alike."""
    cos = float(torch.dot(a.flatten().double(), b.flatten().double()) / (a.double().norm() * b.double().norm()))
    angle = math.acos(max(-1.0, min(1.0, cos)))
    if math.sin(angle) < 1e-6:
        return (1 - weight) * a + weight * b
    return (math.sin((1 - weight) * angle) * a + math.sin(weight * angle) * b) / math.sin(angle)
