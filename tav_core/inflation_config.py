"""The choices that turn an image UNet into a Tune-A-Video video UNet."""

from dataclasses import dataclass
from enum import Enum


class AttentionMode(str, Enum):
    """Which frames the spatial self-attention (attn1) of frame i reads keys/values from."""

    SPARSE_CAUSAL = "sparse_causal"  # frames 0 and i-1 (Tune-A-Video)
    FIRST_FRAME = "first_frame"  # frame 0 only (Text2Video-Zero)
    FULL = "full"  # every frame of the video


class PositionEncoding(str, Enum):
    """What the temporal attention knows about frame order."""

    NONE = "none"  # as the paper
    SINUSOIDAL = "sinusoidal"  # AnimateDiff-style, added before the q/k/v projections


class GroupNormMode(str, Enum):
    """Where ResNet GroupNorm statistics are pooled."""

    PER_FRAME = "per_frame"  # each frame alone, as the image model was trained (the default)
    PER_VIDEO = "per_video"  # over all frames of a video, as the reference's 3D ResNet blocks


@dataclass(frozen=True)
class InflationConfig:
    attention: AttentionMode = AttentionMode.SPARSE_CAUSAL
    temporal_layers: bool = True
    temporal_position_encoding: PositionEncoding = PositionEncoding.NONE
    groupnorm: GroupNormMode = GroupNormMode.PER_FRAME
