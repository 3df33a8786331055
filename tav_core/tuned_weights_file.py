"""What One-Shot Tune learned, and its file format: host-free, so it can be read and checked anywhere.

Only the tuned parameters travel: each attn1/attn2 to_q as a delta against the base, under the key
ComfyUI's own loader reads as a weight delta ("<path>.to_q.diff"), or, tuned with a rank, as its LoRA in
ComfyUI's generic layout ("<path>.to_q.lora_up.weight" / ".lora_down.weight", no alpha: weight + up @ down);
the temporal layers (temporal attention and, with temporal_conv pseudo3d, the temporal convolutions as their
residual: tav_core.temporal_conv) whole, or, tuned with a temporal rank, their weight matrices as LoRAs over the
layers' fresh, seeded initialisation (which inflation recreates exactly) and their vectors whole, and what was
tuned of a motion module (a motion LoRA in AnimateDiff's layout, or deltas of all its weights), with
fingerprints of the base UNet and of the motion module and the inflation settings in the metadata. Saved beside a
ComfyUI LoRA file (comfy_lora_contents), the spatial part lives in that file alone and the metadata names it
(SPATIAL_LORA_KEY).
"""

import json
from dataclasses import dataclass, field, replace

import torch

from .inflation_config import InflationConfig, TemporalConvMode
from .motion_module_file import LowRank, motion_lora_tensors, paired_low_rank, read_motion_lora
from .pack_version import PACK_VERSION
from .weights_file import WeightsFileError

FILE_FORMAT = "tune-a-video/tuned-weights/1"
MOTION_LORA_FORMAT = "animatediff/motion-lora"
TEMPORAL_PREFIX = "tav_temporal."
# The two kinds of temporal layer in a TemporalLayers state dict: attention by block, pseudo-3D convolutions.
TEMPORAL_ATTENTION_PREFIX = "layers."
TEMPORAL_CONV_PREFIX = "convs."
MOTION_LORA_PREFIX = "tav_motion_lora."
MOTION_DELTA_PREFIX = "tav_motion_diff."
MOTION_FIELDS = ("name", "version", "identity")
WEIGHT_SUFFIX = ".weight"
DELTA_SUFFIX = ".diff"
LORA_UP_SUFFIX = ".lora_up.weight"
LORA_DOWN_SUFFIX = ".lora_down.weight"
ALPHA_SUFFIX = ".alpha"
SPATIAL_LORA_KEY = "spatial_lora"  # metadata: the ComfyUI LoRA file (in models/loras) holding the spatial part
REQUIRED_METADATA = ("inflation", "base_architecture", "base_weights")


@dataclass(frozen=True)
class UNetFingerprint:
    architecture: str  # hash of parameter names and shapes
    weights: str  # hash of evenly spaced samples of every untouched weight, rounded to fp16
    description: str = field(default="", compare=False)  # the architecture in words, for error messages


@dataclass(frozen=True)
class MotionRecord:
    """The motion module a tune ran on."""

    name: str  # the module (and any motion LoRA on it) in words
    version: str
    identity: str  # fingerprint of its weights and LoRA


@dataclass
class TunedWeights:
    q_deltas: dict[str, torch.Tensor]  # ModelPatcher key ("diffusion_model....to_q.weight") -> delta
    temporal: dict[str, torch.Tensor]  # TemporalLayers state_dict
    inflation: InflationConfig
    fingerprint: UNetFingerprint
    info: dict[str, str] = field(default_factory=dict)  # frames, caption, steps, learning rate, ...
    motion: MotionRecord | None = None  # the motion module tuned with, if any
    motion_lora: dict[str, LowRank] = field(default_factory=dict)  # motion-module weight key -> its LoRA
    motion_deltas: dict[str, torch.Tensor] = field(default_factory=dict)  # motion-module key -> delta (full)
    q_lora: dict[str, LowRank] = field(default_factory=dict)  # to_q key -> its LoRA (tuned with a rank)
    spatial_lora: str = ""  # the ComfyUI LoRA file holding the spatial part, when it is not in this file
    # TemporalLayers state_dict key -> its LoRA over the fresh layers' value (tuned with a temporal rank); such a key
    # is then not in `temporal`
    temporal_lora: dict[str, LowRank] = field(default_factory=dict)

    def q_delta(self, key: str) -> torch.Tensor | None:
        """The tuned change of one to_q weight, full-rank or from its LoRA (None: not tuned here)."""
        if key in self.q_lora:
            return self.q_lora[key].up @ self.q_lora[key].down
        return self.q_deltas.get(key)

    def q_shapes(self) -> dict[str, tuple[int, int]]:
        """The to_q weight shapes these weights change."""
        shapes = {key: tuple(delta.shape) for key, delta in self.q_deltas.items()}
        shapes.update({key: (lora.up.shape[0], lora.down.shape[1]) for key, lora in self.q_lora.items()})
        return shapes


def q_lora_tensors(loras: dict[str, LowRank], with_alpha: bool = False) -> dict[str, torch.Tensor]:
    """LoRAs (of to_q, or of temporal weights) in ComfyUI's generic LoRA layout; `with_alpha` adds alpha = rank
    (a scale of 1), which LoRA trainers write and some loaders expect."""
    tensors = {}
    for key, lora in loras.items():
        stem = key.removesuffix(WEIGHT_SUFFIX)
        tensors[stem + LORA_UP_SUFFIX] = lora.up
        tensors[stem + LORA_DOWN_SUFFIX] = lora.down
        if with_alpha:
            tensors[stem + ALPHA_SUFFIX] = torch.tensor(float(lora.down.shape[0]))
    return tensors


def comfy_lora_contents(weights: TunedWeights, dtype: torch.dtype) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The spatial part (the to_q changes) as a standard ComfyUI LoRA file, which LoraLoaderModelOnly applies:
    LoRAs as lora_up / lora_down / alpha, full-rank deltas as ComfyUI's "diff" weight deltas."""
    tensors = {key: value.to(dtype) for key, value in q_lora_tensors(weights.q_lora, with_alpha=True).items()}
    tensors.update({
        key.removesuffix(WEIGHT_SUFFIX) + DELTA_SUFFIX: delta.to(dtype) for key, delta in weights.q_deltas.items()
    })
    metadata = {"pack_version": PACK_VERSION, **{f"info.{key}": value for key, value in weights.info.items()}}
    return tensors, metadata


def without_spatial_part(weights: TunedWeights, lora_name: str) -> TunedWeights:
    """The same weights with the spatial part left to the ComfyUI LoRA file `lora_name`."""
    return replace(weights, q_deltas={}, q_lora={}, spatial_lora=lora_name)


def to_file_contents(weights: TunedWeights, dtype: torch.dtype) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    tensors = {
        key.removesuffix(WEIGHT_SUFFIX) + DELTA_SUFFIX: delta.to(dtype) for key, delta in weights.q_deltas.items()
    }
    tensors.update({key: value.to(dtype) for key, value in q_lora_tensors(weights.q_lora).items()})
    temporal = {**weights.temporal, **q_lora_tensors(weights.temporal_lora)}
    tensors.update({TEMPORAL_PREFIX + key: value.to(dtype) for key, value in temporal.items()})
    lora = motion_lora_tensors(weights.motion_lora)
    tensors.update({MOTION_LORA_PREFIX + key: value.to(dtype) for key, value in lora.items()})
    tensors.update({MOTION_DELTA_PREFIX + key: value.to(dtype) for key, value in weights.motion_deltas.items()})
    metadata = {
        "format": FILE_FORMAT,
        "pack_version": PACK_VERSION,
        "base_architecture": weights.fingerprint.architecture,
        "base_weights": weights.fingerprint.weights,
        "base_description": weights.fingerprint.description,
        "inflation": json.dumps(weights.inflation.to_dict()),
        **{f"info.{key}": value for key, value in weights.info.items()},
    }
    if weights.spatial_lora:
        metadata[SPATIAL_LORA_KEY] = weights.spatial_lora
    if weights.motion is not None:
        metadata["motion_module"] = json.dumps({name: getattr(weights.motion, name) for name in MOTION_FIELDS})
    return tensors, metadata


def motion_lora_file_contents(
    weights: TunedWeights, dtype: torch.dtype
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tuned motion LoRA alone, in AnimateDiff's motion-LoRA layout (no alpha: weight + up @ down)."""
    if not weights.motion_lora:
        raise ValueError(
            "these tuned weights hold no motion LoRA (tuned without a motion module, or with motion_training "
            "full or frozen)"
        )
    tensors = {key: value.to(dtype) for key, value in motion_lora_tensors(weights.motion_lora).items()}
    ranks = sorted({lora.down.shape[0] for lora in weights.motion_lora.values()})
    metadata = {
        "format": MOTION_LORA_FORMAT,
        "pack_version": PACK_VERSION,
        "motion_module": weights.motion.name,
        "motion_version": weights.motion.version,
        "rank": ",".join(map(str, ranks)),
        **{f"info.{key}": value for key, value in weights.info.items()},
    }
    return tensors, metadata


def from_file_contents(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> TunedWeights:
    """The TunedWeights a file holds; anything malformed or non-finite is a WeightsFileError saying what."""
    if metadata.get("format") != FILE_FORMAT:
        raise WeightsFileError(
            f"not a Tune-A-Video tuned-weights file (its metadata says format {metadata.get('format')!r}, "
            f"this pack writes {FILE_FORMAT!r})"
        )
    missing = [key for key in REQUIRED_METADATA if key not in metadata]
    if missing:
        raise WeightsFileError(f"its metadata lacks {', '.join(missing)}: the file is damaged or hand-made")
    try:
        inflation = InflationConfig.from_dict(json.loads(metadata["inflation"]))
    except (ValueError, TypeError) as error:  # json.JSONDecodeError is a ValueError
        raise WeightsFileError(f"its recorded inflation settings are unreadable ({error})") from error

    q_deltas, q_halves, temporal, temporal_halves, lora, motion_deltas, unexpected = {}, {}, {}, {}, {}, {}, []
    for key, value in tensors.items():
        if key.startswith(TEMPORAL_PREFIX):
            is_half = key.endswith((LORA_UP_SUFFIX, LORA_DOWN_SUFFIX))
            (temporal_halves if is_half else temporal)[key.removeprefix(TEMPORAL_PREFIX)] = value.float()
        elif key.startswith(MOTION_LORA_PREFIX):
            lora[key.removeprefix(MOTION_LORA_PREFIX)] = value.float()
        elif key.startswith(MOTION_DELTA_PREFIX):
            motion_deltas[key.removeprefix(MOTION_DELTA_PREFIX)] = value.float()
        elif key.endswith(DELTA_SUFFIX):
            q_deltas[key.removesuffix(DELTA_SUFFIX) + WEIGHT_SUFFIX] = value.float()
        elif key.endswith((LORA_UP_SUFFIX, LORA_DOWN_SUFFIX)):
            q_halves[key] = value.float()
        else:
            unexpected.append(key)
    if unexpected:
        raise WeightsFileError(f"it holds tensors this format does not have, e.g. {unexpected[0]!r}")
    q_lora = read_lora_pairs(q_halves)
    temporal_lora = read_lora_pairs(temporal_halves)
    spatial_lora = metadata.get(SPATIAL_LORA_KEY, "")
    if not (q_deltas or q_lora or spatial_lora):
        raise WeightsFileError("it holds no to_q deltas")
    temporal_keys = [*temporal, *temporal_lora]
    if not inflation.temporal_layers and any(key.startswith(TEMPORAL_ATTENTION_PREFIX) for key in temporal_keys):
        raise WeightsFileError("it holds temporal layers, but its inflation settings say temporal_layers=False")
    convs = any(key.startswith(TEMPORAL_CONV_PREFIX) for key in temporal_keys)
    if convs and inflation.temporal_conv == TemporalConvMode.NONE:
        raise WeightsFileError("it holds temporal convolutions, but its inflation settings say temporal_conv=none")
    check_finite({**q_deltas, **q_halves, **temporal, **temporal_halves, **lora, **motion_deltas})
    motion = read_motion_record(metadata)
    if (lora or motion_deltas) and motion is None:
        raise WeightsFileError("it holds tuned motion-module weights but does not record the motion module")

    info = {key.removeprefix("info."): value for key, value in metadata.items() if key.startswith("info.")}
    fingerprint = UNetFingerprint(
        metadata["base_architecture"], metadata["base_weights"], metadata.get("base_description", "")
    )
    motion_lora = read_motion_lora(lora) if lora else {}
    return TunedWeights(
        q_deltas, temporal, inflation, fingerprint, info, motion, motion_lora, motion_deltas, q_lora, spatial_lora,
        temporal_lora,
    )


def read_lora_pairs(halves: dict[str, torch.Tensor]) -> dict[str, LowRank]:
    """weight key -> LoRA from a file's lora_up / lora_down tensors, each pair complete and multipliable."""
    stems = {key.removesuffix(LORA_UP_SUFFIX).removesuffix(LORA_DOWN_SUFFIX) for key in halves}
    return {
        stem + WEIGHT_SUFFIX: paired_low_rank(
            stem, halves.get(stem + LORA_UP_SUFFIX), halves.get(stem + LORA_DOWN_SUFFIX)
        )
        for stem in sorted(stems)
    }


def read_motion_record(metadata: dict[str, str]) -> MotionRecord | None:
    if "motion_module" not in metadata:
        return None
    try:
        values = json.loads(metadata["motion_module"])
        return MotionRecord(**{name: str(values[name]) for name in MOTION_FIELDS})
    except (ValueError, TypeError, KeyError) as error:
        raise WeightsFileError(f"its recorded motion module is unreadable ({error!r})") from error


def check_finite(tensors: dict[str, torch.Tensor]) -> None:
    """Refuse NaN or infinite values: one of them makes every edit NaN."""
    bad = [key for key, value in sorted(tensors.items()) if not bool(torch.isfinite(value).all())]
    if bad:
        count = len(bad)
        raise WeightsFileError(
            f"{count} tensor{'s' if count > 1 else ''} hold{'' if count > 1 else 's'} NaN or infinite values, "
            f"e.g. {bad[0]!r}: the tuning that wrote it diverged or the file is damaged"
        )

