"""TAV_WEIGHTS on ComfyUI models: the base UNet's fingerprint, checking that weights fit, applying them.

The to_q deltas become ordinary ComfyUI "diff" weight patches (baked in at load time, free per step);
the temporal layers are attached whole. The file format itself lives in tav_core.tuned_weights_file.
"""

import hashlib
import logging

import comfy.model_patcher
import comfy.utils
import torch

from ..tav_core.errors import TAVInputError
from ..tav_core.tuned_weights_file import TunedWeights, UNetFingerprint
from ..tav_core.weight_samples import sampled_bytes
from ..tav_core.weights_file import WeightsFileError
from .unet_inflation import (
    Inflation,
    attach_temporal_layers,
    describe_architecture,
    empty_temporal_layers,
    inflate_model,
    inflation_of,
    temporal_layers_of,
    unet_compute_dtype,
)

MISMATCHES_NAMED = 3


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


def shape_mismatches(expected: dict[str, torch.Size], given: dict[str, torch.Tensor]) -> list[str]:
    """Missing, unexpected and wrongly shaped entries, named, first few of each."""
    problems = [f"no {key}" for key in sorted(set(expected) - set(given))]
    problems += [f"unexpected {key}" for key in sorted(set(given) - set(expected))]
    problems += [
        f"{key} is {tuple(given[key].shape)}, the model's is {tuple(shape)}"
        for key, shape in sorted(expected.items()) if key in given and given[key].shape != shape
    ]
    return problems


def check_fit(model, weights: TunedWeights) -> None:
    """Every tensor must have its place and shape in this inflated model (a WeightsFileError otherwise)."""
    problems = shape_mismatches(tuned_q_shapes(model), weights.q_deltas)
    temporal = temporal_layers_of(model)
    if temporal is not None:
        shapes = {key: value.shape for key, value in temporal.state_dict().items()}
        problems += shape_mismatches(shapes, weights.temporal)
    if problems:
        raise WeightsFileError(
            f"its tensors do not fit this model ({len(problems)} problems: {'; '.join(problems[:MISMATCHES_NAMED])})"
        )


def apply_tuned_weights(model, weights: TunedWeights) -> "comfy.model_patcher.ModelPatcher":
    """A clone of an inflated `model` carrying the tuned to_q deltas as patches and its own temporal layers."""
    tuned = model.clone()
    tuned.add_patches({key: ("diff", (delta,)) for key, delta in weights.q_deltas.items()})
    if weights.temporal:
        layers = empty_temporal_layers(inflation_of(model), unet_compute_dtype(model), model.offload_device)
        layers.load_state_dict(weights.temporal)
        attach_temporal_layers(tuned, layers)
    return tuned


def load_onto(
    model, weights: TunedWeights, allow_mismatch: bool, node: str, source: str
) -> "comfy.model_patcher.ModelPatcher":
    """Apply weights to the base they were tuned on: inflate it as recorded, or check its inflation.

    `source` names where the weights came from (the file), for the messages."""
    inflation = inflation_of(model)
    if inflation is None:
        model = inflate_model(model, weights.inflation, node)
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
    try:
        check_fit(model, weights)
    except WeightsFileError as error:
        raise TAVInputError(node, "weights_name", f"{source}: {error}.") from error
    if found.weights != tuned_on.weights:
        message = (
            f"{source} was tuned on the same kind of UNet ({found.description}) but with other weights "
            "(another checkpoint or a different version of it)."
        )
        if not allow_mismatch:
            raise TAVInputError(
                node, "model", message,
                "Load the checkpoint the video was tuned on, or enable allow_mismatch to apply them anyway.",
            )
        logging.warning("%s: %s Applying them anyway (allow_mismatch).", node, message)
    return apply_tuned_weights(model, weights)
