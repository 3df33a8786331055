"""The original Tune-A-Video UNet3D checkpoints on ComfyUI models: loading one onto a MODEL, writing one from a tune.

The 2-D part goes through ComfyUI's own diffusers key mapping (comfy.utils.unet_to_diffusers); the temporal
layers sit in the transformer block the same mapping names. A loaded checkpoint is a clone inflated as the
reference runs (REFERENCE_INFLATION) whose UNet weights are "set" patches where the file differs from the MODEL,
so the result is the file's UNet whatever SD weights the MODEL had, at the memory cost of what differs.
"""

from pathlib import Path

import comfy.lora
import comfy.model_base
import comfy.utils
import torch

from ..tav_core.errors import TAVInputError
from ..tav_core.inflation_config import TemporalConvMode
from ..tav_core.reference_unet import (
    REFERENCE_INFLATION,
    TEMPORAL_KEYS,
    ReferenceConfigError,
    architecture_differences,
    diffusers_config,
    unet_config_from_diffusers,
)
from ..tav_core.tuned_weights_file import TunedWeights, check_finite
from ..tav_core.weights_file import MISMATCHES_NAMED, WeightsFileError, in_brief, shape_mismatches
from .tuned_weights import tuned_temporal_state, unet_fingerprint, unpatched_weight
from .unet_inflation import (
    Inflation,
    attach_temporal_layers,
    empty_temporal_layers,
    inflate_model,
    inflation_of,
    supported_unet,
    unet_compute_dtype,
)
from .weights_loading import read_tensors

BLOCK_MARKER = ".norm1.weight"  # every transformer block has one: it locates the block in both layouts
SD2_SAMPLE_SIZE, SD_SAMPLE_SIZE = 96, 64  # latent sizes diffusers' SD configs record (768 and 512 pixels)


def spatial_keys(model, unet_config: dict) -> dict[str, str]:
    """diffusers key -> ModelPatcher key, for every weight of the MODEL's UNet that ComfyUI's mapping names."""
    present = {f"diffusion_model.{key}" for key in model.model.diffusion_model.state_dict()}
    mapping = {d: f"diffusion_model.{c}" for d, c in comfy.utils.unet_to_diffusers(unet_config).items()}
    return {d: c for d, c in mapping.items() if c in present}


def temporal_keys(spatial: dict[str, str], inflation: Inflation) -> dict[str, str]:
    """Reference temporal key -> TemporalLayers state key, block by block."""
    sites = {site.path: site for site in inflation.sites.transformer_blocks}
    keys = {}
    for d, c in spatial.items():
        if ".transformer_blocks." in d and d.endswith(BLOCK_MARKER):
            site = sites[c.removesuffix(BLOCK_MARKER)]
            block = d.removesuffix(BLOCK_MARKER)
            keys.update({f"{block}.{ref}": f"layers.{site.name}.{pack}" for ref, pack in TEMPORAL_KEYS.items()})
    return keys


def check_architecture(model, config: dict, node: str, source: str) -> dict:
    """The unet_config `config` (a config.json) describes, which must be the MODEL's UNet."""
    try:
        unet_config = unet_config_from_diffusers(config)
    except ReferenceConfigError as error:
        raise TAVInputError(node, "unet_name", f"{source}: {error}.") from error
    differences = architecture_differences(unet_config, model.model.model_config.unet_config)
    if differences:
        raise TAVInputError(
            node, "model",
            f"{source} is another UNet than this MODEL's ({len(differences)} differences, MODEL vs file: "
            f"{'; '.join(differences[:MISMATCHES_NAMED])}).",
            "Load the SD checkpoint the video was tuned from and connect its MODEL.",
        )
    return unet_config


def load_reference_unet(model, config: dict, path: Path, node: str, source: str):
    """A clone of `model` inflated as the reference runs, with the checkpoint's UNet and temporal layers; the file
    is read only once the MODEL and config.json have been checked."""
    supported_unet(model, node)
    if inflation_of(model) is not None:
        raise TAVInputError(
            node, "model", "this MODEL is already inflated.",
            "Connect the checkpoint's MODEL: it is inflated here as the reference runs it.",
        )
    unet_config = check_architecture(model, config, node, source)
    inflated = inflate_model(model, REFERENCE_INFLATION, node)
    spatial = spatial_keys(model, unet_config)
    layers = empty_temporal_layers(inflation_of(inflated), unet_compute_dtype(model), model.offload_device)
    temporal = temporal_keys(spatial, inflation_of(inflated))
    layer_shapes = {key: value.shape for key, value in layers.state_dict().items()}
    expected = {d: model.get_model_object(c).shape for d, c in spatial.items()}
    expected.update({ref: layer_shapes[pack] for ref, pack in temporal.items()})
    try:
        tensors = read_tensors(path)
        problems = shape_mismatches(expected, tensors)
        if problems:
            raise WeightsFileError(
                f"its tensors are not those of a Tune-A-Video UNet3D of this architecture ({in_brief(problems)})"
            )
        check_finite(tensors)
    except WeightsFileError as error:
        raise TAVInputError(node, "unet_name", f"{source}: {error}.") from error

    patches = {}
    for d, c in spatial.items():
        current = unpatched_weight(model, c)
        value = tensors[d].to(current.dtype)
        if not torch.equal(value, current):
            patches[c] = ("set", (value,))
    inflated.add_patches(patches)
    layers.load_state_dict({pack: tensors[ref] for ref, pack in temporal.items()})
    attach_temporal_layers(inflated, layers)
    return inflated


def effective_weight(model, key: str, delta: torch.Tensor | None) -> torch.Tensor:
    """A UNet weight as the tune ran it: the MODEL's own patches (a LoRA, say) applied in fp32, plus the tuned delta
    (skipped among the patches if this MODEL already carries it: One-Shot Tune's output)."""
    patches = [
        patch for patch in model.patches.get(key, [])
        if not (delta is not None and isinstance(patch[1], tuple) and patch[1][0] == "diff" and patch[1][1][0] is delta)
    ]
    weight = unpatched_weight(model, key).float().clone()
    if patches:
        weight = comfy.lora.calculate_weight(patches, weight, key)
    return weight if delta is None else weight + delta.to(weight)


def reference_unet_contents(model, weights: TunedWeights, node: str) -> tuple[dict[str, torch.Tensor], dict]:
    """The reference-layout state dict and config.json for `weights` tuned on `model` (One-Shot Tune's input or
    output)."""
    inflation = inflation_of(model)
    if inflation is None:
        raise TAVInputError(
            node, "model", "this MODEL is not inflated, so it is not the one the weights were tuned on.",
            "Connect One-Shot Tune's model input or output.",
        )
    if weights.spatial_lora:
        raise TAVInputError(
            node, "tuned_weights",
            f"these weights hold only the temporal part; their to_q part is the ComfyUI LoRA {weights.spatial_lora}, "
            "so the reference UNet would come out with untuned to_q projections.",
            "Save from One-Shot Tune's tuned_weights, or load a file saved without as_comfy_lora.",
        )
    if weights.inflation.temporal_conv != TemporalConvMode.NONE:
        raise TAVInputError(
            node, "tuned_weights",
            f"these weights were tuned with temporal_conv {weights.inflation.temporal_conv.value}; the reference's "
            "UNet3D has no temporal convolutions, so its checkpoint layout cannot hold them.",
            "Save with format pack (TAV Load Tuned Weights reads it), or inflate with temporal_conv none and tune "
            "again.",
        )
    if weights.inflation != REFERENCE_INFLATION or weights.motion is not None:
        tuned_with = weights.inflation.describe() + (f", motion module {weights.motion.name}" if weights.motion else "")
        raise TAVInputError(
            node, "tuned_weights",
            f"these weights were tuned with {tuned_with}; the reference's UNet3D runs {REFERENCE_INFLATION.describe()} "
            "and no motion module, so it would compute something else with them.",
            "Inflate with those settings (groupnorm per_video) and tune again, or save with format pack.",
        )
    if unet_fingerprint(model) != weights.fingerprint:
        raise TAVInputError(
            node, "model", f"these weights were tuned on another UNet ({weights.fingerprint.description}).",
            "Connect the MODEL they were tuned on (One-Shot Tune's model input or output).",
        )
    unet_config = model.model.model_config.unet_config
    v_prediction = model.model.model_type == comfy.model_base.ModelType.V_PREDICTION
    upcast = unet_config.get("attn_precision") == torch.float32
    try:
        config = diffusers_config(unet_config, SD2_SAMPLE_SIZE if v_prediction else SD_SAMPLE_SIZE, upcast)
    except ReferenceConfigError as error:
        raise TAVInputError(node, "model", f"{error}.", "Save with format pack instead.") from error
    spatial = spatial_keys(model, unet_config)
    uncovered = sorted(set(model.model.diffusion_model.state_dict()) - {c.removeprefix("diffusion_model.")
                                                                        for c in spatial.values()})
    if uncovered:
        raise TAVInputError(node, "model", f"diffusers has no key for {', '.join(uncovered[:MISMATCHES_NAMED])}.")
    tensors = {d: effective_weight(model, c, weights.q_delta(c)) for d, c in spatial.items()}
    temporal = tuned_temporal_state(inflation, weights)
    tensors.update({ref: temporal[pack] for ref, pack in temporal_keys(spatial, inflation).items()})
    return tensors, config
