"""The choices that turn an image UNet into a Tune-A-Video video UNet."""

from dataclasses import asdict, dataclass, fields
from enum import Enum


class AttentionMode(str, Enum):
    """Which frames the spatial self-attention (attn1) of frame i reads keys/values from."""

    SPARSE_CAUSAL = "sparse_causal"  # frames 0 and i-1 (Tune-A-Video)
    FIRST_FRAME = "first_frame"  # frame 0 only (Text2Video-Zero)
    FULL = "full"  # every frame of the video
    PER_FRAME = "per_frame"  # the frame itself: the image model's own attention (AnimateDiff)


class PositionEncoding(str, Enum):
    """What the temporal attention knows about frame order."""

    NONE = "none"  # as the paper
    SINUSOIDAL = "sinusoidal"  # AnimateDiff-style, added before the q/k/v projections


class GroupNormMode(str, Enum):
    """Where ResNet GroupNorm statistics are pooled."""

    PER_FRAME = "per_frame"  # each frame alone, as the image model was trained (the default)
    PER_VIDEO = "per_video"  # over all frames of a video, as the reference's 3D ResNet blocks


class TemporalConvMode(str, Enum):
    """What follows each 3x3 convolution inside the UNet's ResNet blocks."""

    NONE = "none"  # nothing (the paper)
    PSEUDO3D = "pseudo3d"  # a 1-D convolution over the frames, Make-A-Video's pseudo-3D convolution


# Settings newer than the tuned-weights format: files written before lack them and get the default, which is what
# the pack computed then.
ADDED_LATER = frozenset({"temporal_conv"})


@dataclass(frozen=True)
class InflationConfig:
    attention: AttentionMode = AttentionMode.SPARSE_CAUSAL
    temporal_layers: bool = True
    temporal_position_encoding: PositionEncoding = PositionEncoding.NONE
    groupnorm: GroupNormMode = GroupNormMode.PER_FRAME
    temporal_conv: TemporalConvMode = TemporalConvMode.NONE

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if isinstance(field.type, type) and issubclass(field.type, Enum):
                object.__setattr__(self, field.name, field.type(value))  # ValueError names a bad value
            elif not isinstance(value, bool):
                raise ValueError(f"{field.name} must be true or false, not {value!r}")

    def to_dict(self) -> dict[str, str | bool]:
        """Plain JSON values, e.g. for a weights file's metadata."""
        return {name: value.value if isinstance(value, Enum) else value for name, value in asdict(self).items()}

    @classmethod
    def from_dict(cls, values: dict) -> "InflationConfig":
        """The inverse of to_dict; a missing (other than ADDED_LATER), unknown or invalid setting is a ValueError that
        names it."""
        names = {field.name for field in fields(cls)}
        if not isinstance(values, dict):
            raise ValueError(f"expected the inflation settings as an object, got {values!r}")
        missing, unknown = sorted(names - set(values) - ADDED_LATER), sorted(set(values) - names)
        if missing or unknown:
            raise ValueError(f"inflation settings: missing {missing or 'none'}, unknown {unknown or 'none'}")
        return cls(**values)

    @property
    def adds_layers(self) -> bool:
        """Whether inflation adds trainable layers to the UNet (temporal attention, pseudo-3D convolutions)."""
        return self.temporal_layers or self.temporal_conv != TemporalConvMode.NONE

    def describe(self) -> str:
        return ", ".join(f"{name}={value}" for name, value in self.to_dict().items())
