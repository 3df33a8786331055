"""TAV_WEIGHTS: what One-Shot Tune learned, how it is applied to a model, saved and loaded.

Only the tuned parameters travel: each attn1/attn2 to_q as a delta against the base (applied as
an ordinary ComfyUI "diff" weight patch, so it is baked in at load time and costs nothing per
step) and the temporal layers whole. A fingerprint of the base UNet guards against applying them
to a different checkpoint.
"""

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import comfy.utils
import tomllib
import torch

from ..tav_core.errors import TAVInputError
from ..tav_core.inflation_config import AttentionMode, GroupNormMode, InflationConfig, PositionEncoding
from .unet_inflation import (
    attach_temporal_layers,
    build_temporal_layers,
    inflate_model,
    inflation_of,
    supported_unet,
    transformer_block_sites,
    unet_compute_dtype,
)

FILE_FORMAT = "tune-a-video/tuned-weights/1"
TEMPORAL_PREFIX = "tav_temporal."
DELTA_SUFFIX = ".diff"  # "<path>.to_q.diff": the key ComfyUI's own loader reads as a weight delta
FINGERPRINT_SAMPLES = 64
PACK_VERSION = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"][
    "version"
]


@dataclass(frozen=True)
class UNetFingerprint:
    architecture: str  # hash of parameter names and shapes
    weights: str  # hash of evenly spaced samples of every untouched weight, rounded to fp16


@dataclass
class TunedWeights:
    q_deltas: dict[str, torch.Tensor]  # ModelPatcher key ("diffusion_model....to_q.weight") -> delta
    temporal: dict[str, torch.Tensor]  # TemporalLayers state_dict
    inflation: InflationConfig
    fingerprint: UNetFingerprint
    info: dict[str, str] = field(default_factory=dict)  # frames, caption, steps, learning rate, ...


def tuned_q_keys(model) -> list[str]:
    """attn1.to_q and attn2.to_q of every transformer block: the paper's tuned projections."""
    keys = []
    for site in transformer_block_sites(supported_unet(model)):
        keys.append(f"{site.path}.attn1.to_q.weight")
        if site.block.attn2 is not None:
            keys.append(f"{site.path}.attn2.to_q.weight")
    return keys


def unpatched_weight(model, key: str) -> torch.Tensor:
    """A weight as the checkpoint has it, even while a clone with LoRA patches is loaded."""
    backup = model.backup.get(key)
    return backup.weight if backup is not None else comfy.utils.get_attr(model.model, key)


def fingerprint_indices(numel: int) -> torch.Tensor:
    """FINGERPRINT_SAMPLES evenly spaced element indices, computed in float64: float32 cannot count past
    2**24, and SD1.5's largest convolutions have 29.5M elements (its last index would round out of range)."""
    count = min(FINGERPRINT_SAMPLES, numel)
    return torch.linspace(0, numel - 1, count, dtype=torch.float64).round().long()


def unet_fingerprint(model) -> UNetFingerprint:
    """Identifies the base checkpoint's UNet; to_q weights are left out since tuning changes them."""
    tuned = set(tuned_q_keys(model))
    architecture, weights = hashlib.sha256(), hashlib.sha256()
    for name, param in sorted(supported_unet(model).named_parameters()):
        key = f"diffusion_model.{name}"
        architecture.update(f"{key}:{tuple(param.shape)}\n".encode())
        if key in tuned:
            continue
        flat = unpatched_weight(model, key).detach().reshape(-1)
        samples = flat[fingerprint_indices(flat.numel()).to(flat.device)].float().half().cpu()
        weights.update(key.encode() + samples.numpy().tobytes())
    return UNetFingerprint(architecture.hexdigest(), weights.hexdigest())


def apply_tuned_weights(model, weights: TunedWeights) -> "comfy.model_patcher.ModelPatcher":
    """A clone of an inflated `model` carrying the tuned to_q deltas as patches and its own temporal layers."""
    tuned = model.clone()
    patches = {key: ("diff", (delta,)) for key, delta in weights.q_deltas.items()}
    applied = set(tuned.add_patches(patches))
    missing = sorted(set(patches) - applied)
    if missing:
        raise ValueError(f"the tuned weights do not fit this UNet (no {missing[0]})")
    if weights.temporal:
        layers = build_temporal_layers(
            transformer_block_sites(supported_unet(model)), weights.inflation, unet_compute_dtype(model),
            model.offload_device,
        )
        layers.load_state_dict(weights.temporal)
        attach_temporal_layers(tuned, layers)
    return tuned


def load_onto(model, weights: TunedWeights, allow_mismatch: bool, node: str) -> "comfy.model_patcher.ModelPatcher":
    """Apply weights to the base they were tuned on: inflate it as recorded, or check its inflation."""
    current = inflation_of(model)
    if current is None:
        model = inflate_model(model, weights.inflation)
    elif current != weights.inflation:
        raise TAVInputError(
            node, "model",
            f"the MODEL was inflated with {describe(current)} but the weights were tuned with "
            f"{describe(weights.inflation)}.",
            "Connect the checkpoint's MODEL directly (it is inflated with the recorded settings) or match them.",
        )
    found = unet_fingerprint(model)
    if found != weights.fingerprint:
        problem = "architecture" if found.architecture != weights.fingerprint.architecture else "weights"
        message = (
            f"the weights were tuned on a different base UNet ({problem} differ: tuned on "
            f"{weights.fingerprint.weights[:12]}, this MODEL is {found.weights[:12]})."
        )
        if problem == "architecture" or not allow_mismatch:
            raise TAVInputError(
                node, "model", message,
                "Load the checkpoint the video was tuned on"
                + ("" if problem == "architecture" else ", or enable allow_mismatch to apply them anyway."),
            )
        logging.warning("%s: %s Applying them anyway (allow_mismatch).", node, message)
    return apply_tuned_weights(model, weights)


def describe(config: InflationConfig) -> str:
    return (
        f"attention={config.attention.value}, temporal_layers={config.temporal_layers}, "
        f"temporal_position_encoding={config.temporal_position_encoding.value}, groupnorm={config.groupnorm.value}"
    )


def to_file_contents(weights: TunedWeights, dtype: torch.dtype) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    tensors = {key.removesuffix(".weight") + DELTA_SUFFIX: delta.to(dtype) for key, delta in weights.q_deltas.items()}
    tensors.update({TEMPORAL_PREFIX + key: value.to(dtype) for key, value in weights.temporal.items()})
    metadata = {
        "format": FILE_FORMAT,
        "pack_version": PACK_VERSION,
        "base_architecture": weights.fingerprint.architecture,
        "base_weights": weights.fingerprint.weights,
        "inflation": json.dumps({
            "attention": weights.inflation.attention.value,
            "temporal_layers": weights.inflation.temporal_layers,
            "temporal_position_encoding": weights.inflation.temporal_position_encoding.value,
            "groupnorm": weights.inflation.groupnorm.value,
        }),
        **{f"info.{key}": value for key, value in weights.info.items()},
    }
    return tensors, metadata


def from_file_contents(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> TunedWeights:
    if metadata.get("format") != FILE_FORMAT:
        raise ValueError(f"not a Tune-A-Video weights file (format {metadata.get('format')!r})")
    inflation = json.loads(metadata["inflation"])
    config = InflationConfig(
        attention=AttentionMode(inflation["attention"]),
        temporal_layers=bool(inflation["temporal_layers"]),
        temporal_position_encoding=PositionEncoding(inflation["temporal_position_encoding"]),
        groupnorm=GroupNormMode(inflation["groupnorm"]),
    )
    q_deltas = {
        key.removesuffix(DELTA_SUFFIX) + ".weight": value.float()
        for key, value in tensors.items() if key.endswith(DELTA_SUFFIX)
    }
    temporal = {
        key.removeprefix(TEMPORAL_PREFIX): value.float() for key, value in tensors.items()
        if key.startswith(TEMPORAL_PREFIX)
    }
    info = {key.removeprefix("info."): value for key, value in metadata.items() if key.startswith("info.")}
    fingerprint = UNetFingerprint(metadata["base_architecture"], metadata["base_weights"])
    return TunedWeights(q_deltas, temporal, config, fingerprint, info)
