"""TAV_WEIGHTS on ComfyUI models: the base UNet's fingerprint, checking that weights fit, applying them.

The to_q deltas become ordinary ComfyUI "diff" weight patches (baked in at load time, free per step);
the temporal layers are attached whole (temporal LoRAs merged into their fresh initialisation). The file format
itself lives in tav_core.tuned_weights_file.
"""

import hashlib
import logging

import comfy.model_patcher
import comfy.utils
import torch

from ..tav_core.errors import TAVInputError
from ..tav_core.motion_module_file import lora_mismatches
from ..tav_core.tuned_weights_file import TunedWeights, UNetFingerprint
from ..tav_core.weight_samples import sampled_bytes
from ..tav_core.weights_file import WeightsFileError, in_brief, shape_mismatches
from .motion_injection import MotionModule, motion_patcher_of, swap_motion_patcher
from .motion_loading import with_lora_patches
from .unet_inflation import (
    Inflation,
    attach_temporal_layers,
    describe_architecture,
    empty_temporal_layers,
    fresh_temporal_layers,
    inflate_model,
    inflation_of,
    temporal_layers_of,
    unet_compute_dtype,
)


def tuned_q_keys(inflation: Inflation) -> list[str]:
    """attn1.to_q and attn2.to_q of every transformer block: the paper's tuned projections."""
    keys = []
    for site in inflation.sites.transformer_blocks:
        keys.append(f"{site.path}.attn1.to_q.weight")
        if site.block.attn2 is not None:
            keys.append(f"{site.path}.attn2.to_q.weight")
    return keys


def tuned_q_shapes(model) -> dict[str, torch.Size]:
    """The shape of every tuned to_q weight of an inflated MODEL, by ModelPatcher key."""
    return {key: model.get_model_object(key).shape for key in tuned_q_keys(inflation_of(model))}


def unpatched_weight(model, key: str) -> torch.Tensor:
    """A weight as the checkpoint has it, even while a clone with LoRA patches is loaded."""
    backup = model.backup.get(key)
    return backup.weight if backup is not None else comfy.utils.get_attr(model.model, key)


def unet_fingerprint(model) -> UNetFingerprint:
    """Identifies an inflated MODEL's base UNet; to_q weights are left out since tuning changes them."""
    inflation = inflation_of(model)
    tuned = set(tuned_q_keys(inflation))
    architecture, weights = hashlib.sha256(), hashlib.sha256()
    for name, param in sorted(model.model.diffusion_model.named_parameters()):
        key = f"diffusion_model.{name}"
        architecture.update(f"{key}:{tuple(param.shape)}\n".encode())
        if key in tuned:
            continue
        weights.update(key.encode() + sampled_bytes(unpatched_weight(model, key)))
    return UNetFingerprint(architecture.hexdigest(), weights.hexdigest(), describe_architecture(model, inflation.sites))


def check_fit(model, weights: TunedWeights) -> None:
    """Every tensor must have its place and shape in this inflated model (a WeightsFileError otherwise); a to_q
    part kept in a ComfyUI LoRA file is the stock loader's to fit."""
    problems = [] if weights.spatial_lora else shape_mismatches(tuned_q_shapes(model), weights.q_shapes())
    temporal = temporal_layers_of(model)  # None: the model adds no layers, so the file must hold none
    shapes = {key: value.shape for key, value in temporal.state_dict().items()} if temporal is not None else {}
    problems += shape_mismatches({k: s for k, s in shapes.items() if k not in weights.temporal_lora}, weights.temporal)
    problems += lora_mismatches(weights.temporal_lora, {k: (s[0], s[1:].numel()) for k, s in shapes.items()})
    motion = motion_patcher_of(model)
    if motion is not None and (weights.motion_lora or weights.motion_deltas):
        shapes = {key: value.shape for key, value in motion.model.named_parameters()}
        problems += lora_mismatches(weights.motion_lora, shapes)
        if weights.motion_deltas:
            problems += shape_mismatches(shapes, weights.motion_deltas)
    if problems:
        raise WeightsFileError(
            f"its tensors do not fit this model ({in_brief(problems)})"
        )


def apply_tuned_weights(model, weights: TunedWeights) -> "comfy.model_patcher.ModelPatcher":
    """A clone of an inflated `model` carrying the tuned to_q deltas as patches, its own temporal layers and
    the tuned motion LoRA or deltas as patches on a clone of its motion-module patcher."""
    tuned = with_lora_patches(model, weights.q_lora, 1.0)
    tuned.add_patches({key: ("diff", (delta,)) for key, delta in weights.q_deltas.items()})
    if weights.temporal or weights.temporal_lora:
        layers = empty_temporal_layers(inflation_of(model), unet_compute_dtype(model), model.offload_device)
        layers.load_state_dict(tuned_temporal_state(inflation_of(model), weights))
        attach_temporal_layers(tuned, layers)
    if weights.motion_lora or weights.motion_deltas:
        motion = with_lora_patches(motion_patcher_of(model), weights.motion_lora, 1.0)
        motion.add_patches({key: ("diff", (delta,)) for key, delta in weights.motion_deltas.items()})
        swap_motion_patcher(tuned, motion)
    return tuned


def tuned_temporal_state(inflation: Inflation, weights: TunedWeights) -> dict[str, torch.Tensor]:
    """The temporal layers' state dict the weights give: their whole tensors, and every weight tuned as a LoRA as
    its fresh value (inflation's seeded initialisation, recreated here in fp32) plus up @ down."""
    if not weights.temporal_lora:
        return weights.temporal
    fresh = fresh_temporal_layers(inflation, torch.float32, torch.device("cpu")).state_dict()
    merged = {key: fresh[key] + (lora.up @ lora.down).reshape(fresh[key].shape)
              for key, lora in weights.temporal_lora.items()}
    return {**weights.temporal, **merged}


def load_onto(
    model, weights: TunedWeights, allow_mismatch: bool, node: str, source: str, motion: MotionModule | None = None
) -> "comfy.model_patcher.ModelPatcher":
    """Apply weights to the base they were tuned on: inflate it as recorded (with `motion`, the motion module
    given beside it), or check its inflation.

    `source` names where the weights came from (the file), for the messages."""
    inflation = inflation_of(model)
    if inflation is None:
        model = inflate_model(model, weights.inflation, node, motion)
    elif motion is not None:
        raise TAVInputError(
            node, "motion_module", "the MODEL is already inflated, so its motion module is already chosen.",
            "Connect the checkpoint's MODEL (it is inflated here with this motion module), or leave motion_module "
            "unconnected.",
        )
    elif inflation.config != weights.inflation:
        raise TAVInputError(
            node, "model",
            f"the MODEL was inflated with {inflation.config.describe()} but {source} was tuned with "
            f"{weights.inflation.describe()}.",
            "Connect the checkpoint's MODEL directly (it is inflated with the recorded settings) or match them.",
        )
    found, tuned_on = unet_fingerprint(model), weights.fingerprint
    if found.architecture != tuned_on.architecture:
        raise TAVInputError(
            node, "model",
            f"{source} was tuned on a different kind of UNet: {tuned_on.description or 'not recorded'}; "
            f"this MODEL is a {found.description}.",
            "Load the checkpoint the video was tuned on.",
        )
    check_motion(inflation_of(model).motion, weights, allow_mismatch, node, source)
    check_spatial_lora(model, weights, node, source)
    try:
        check_fit(model, weights)
    except WeightsFileError as error:
        raise TAVInputError(node, "weights_name", f"{source}: {error}.") from error
    if found.weights != tuned_on.weights:
        message = (
            f"{source} was tuned on the same kind of UNet ({found.description}) but with other weights "
            "(another checkpoint or a different version of it)."
        )
        refuse_or_warn(message, allow_mismatch, node, "model", "Load the checkpoint the video was tuned on")
    return apply_tuned_weights(model, weights)


def check_spatial_lora(model, weights: TunedWeights, node: str, source: str) -> None:
    """Weights whose to_q changes went to a ComfyUI LoRA file need that LoRA on the MODEL: without it only the
    temporal part would apply, a half-tuned model that looks fine and edits badly."""
    if not weights.spatial_lora:
        return
    unpatched = [key for key in tuned_q_shapes(model) if key not in model.patches]
    if unpatched:
        raise TAVInputError(
            node, "model",
            f"{source} holds only the temporal part of its tune; the to_q part is the ComfyUI LoRA "
            f"loras/{weights.spatial_lora}, and this MODEL carries no LoRA on {unpatched[0].removesuffix('.weight')}.",
            f"Put LoraLoaderModelOnly with {weights.spatial_lora} (strength 1) between the checkpoint and this node.",
        )


def refuse_or_warn(message: str, allow_mismatch: bool, node: str, input_name: str, fix: str) -> None:
    if not allow_mismatch:
        raise TAVInputError(node, input_name, message, f"{fix}, or enable allow_mismatch to apply them anyway.")
    logging.warning("%s: %s Applying them anyway (allow_mismatch).", node, message)


def check_motion(placement, weights: TunedWeights, allow_mismatch: bool, node: str, source: str) -> None:
    """The model must carry the motion module the weights were tuned with (by fingerprint), or none if none."""
    tuned_with = weights.motion
    if tuned_with is None:
        if placement is not None:
            refuse_or_warn(
                f"{source} was tuned without a motion module, but this MODEL carries {placement.name}.",
                allow_mismatch, node, "motion_module", "Inflate the checkpoint without a motion module",
            )
        return
    if placement is None:
        raise TAVInputError(
            node, "motion_module",
            f"{source} was tuned with the motion module {tuned_with.name}, and this MODEL has none.",
            "Connect TAV Load Motion Module with that file (and motion LoRA) to motion_module.",
        )
    if placement.identity != tuned_with.identity:
        refuse_or_warn(
            f"{source} was tuned with the motion module {tuned_with.name}; this MODEL carries {placement.name}.",
            allow_mismatch, node, "motion_module", "Load the motion module it was tuned with",
        )
