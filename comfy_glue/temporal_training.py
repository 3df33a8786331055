"""The temporal layers inside One-Shot Tune: a private fp32 copy that learns whole, or, with a temporal rank, LoRAs
on its weight matrices (comfy.weight_adapter's, as weight wrappers on its patcher) beside its vectors.

A LoRA's delta is stored against the layers' fresh initialisation (seeded: inflation recreates it exactly), so a file
holds the LoRAs and the vectors and no full matrix; tuning with a temporal rank therefore starts from fresh layers.
"""

from dataclasses import dataclass, field

import comfy.utils
import torch
from torch import nn

from ..tav_core.errors import TAVInputError
from ..tav_core.motion_module_file import LowRank
from ..tav_core.tuning import Trainable, TuneSettings
from .train_adapters import learned_lora, lora_parameters, seeded_lora
from .unet_inflation import (
    Inflation,
    attach_temporal_layers,
    empty_temporal_layers,
    fresh_temporal_layers,
    temporal_layers_of,
)

TEMPORAL_RANK_INPUT = "temporal_rank"


@dataclass
class TemporalTrainer:
    layers: nn.Module  # the private fp32 TemporalLayers
    loras: dict[str, nn.Module] = field(default_factory=dict)  # weight key -> LoraDiff train adapter

    def parameters(self) -> list[nn.Parameter]:
        whole = [param for param in self.layers.parameters() if param.requires_grad]
        return whole + [param for adapter in self.loras.values() for param in lora_parameters(adapter)]

    def learned(self) -> tuple[dict[str, torch.Tensor], dict[str, LowRank]]:
        """The tensors learned whole and the LoRAs (scale folded in), on the CPU in fp32."""
        whole = {key: value.detach().cpu().clone() for key, value in self.layers.state_dict().items()
                 if key not in self.loras}
        return whole, {key: learned_lora(adapter) for key, adapter in self.loras.items()}


def weight_matrices(layers: nn.Module) -> dict[str, torch.Size]:
    """The layers' weights that are matrices (linear) or kernels (the temporal convolutions): what a temporal rank
    turns into LoRAs; LayerNorm weights and biases stay whole."""
    return {key: value.shape for key, value in layers.state_dict().items()
            if key.endswith(".weight") and value.ndim >= 2}


def check_temporal_rank(model, inflation: Inflation, rank: int, node: str) -> None:
    """A temporal rank needs temporal layers, fresh ones (the LoRAs are stored against their initialisation), and a
    rank no larger than their smallest matrix."""
    if rank == 0:
        return
    if rank < 0:
        raise TAVInputError(node, TEMPORAL_RANK_INPUT, f"{rank}: the rank is 0 (tuned whole) or more.")
    current = temporal_layers_of(model)
    if current is None:
        raise TAVInputError(
            node, TEMPORAL_RANK_INPUT, f"{rank}, but this MODEL adds no temporal layers (inflated with "
            f"{inflation.config.describe()}).", "Set temporal_rank to 0, or inflate with temporal layers.",
        )
    smallest = min(min(shape[0], shape[1:].numel()) for shape in weight_matrices(current).values())
    if rank > smallest:
        raise TAVInputError(
            node, TEMPORAL_RANK_INPUT, f"{rank} is above the smallest temporal weight's dimension ({smallest}), where "
            "a LoRA holds no more than the whole weight.", f"Use a temporal_rank up to {smallest}, or 0.",
        )
    fresh = fresh_temporal_layers(inflation, torch.float32, torch.device("cpu")).state_dict()
    state = current.state_dict()
    if any(not torch.equal(state[key], fresh[key].to(state[key])) for key in weight_matrices(current)):
        raise TAVInputError(
            node, TEMPORAL_RANK_INPUT, f"{rank}, but this MODEL's temporal layers were already tuned; temporal LoRAs "
            "are stored against fresh layers.",
            "Connect the checkpoint's MODEL through Inflate UNet (continue a tune with resume_from), or set "
            "temporal_rank to 0.",
        )


def temporal_trainer(
    trainer, model, inflation: Inflation, settings: TuneSettings, generator: torch.Generator, device: torch.device,
) -> TemporalTrainer | None:
    """Attach to the training clone `trainer` a private fp32 copy of `model`'s temporal layers that casts its weights
    to the compute dtype, with what `settings` trains requiring grad (`generator` draws the LoRAs' up halves).

    Pseudo-3D convolutions learn in either trainable mode: the reference has none, so there is nothing of it to
    imitate, and a frozen identity would only cost memory."""
    current = temporal_layers_of(model)
    if current is None:
        return None
    layers = empty_temporal_layers(inflation, torch.float32, model.offload_device)
    layers.load_state_dict(current.state_dict())
    for module in layers.modules():
        if hasattr(module, "comfy_cast_weights"):
            module.comfy_cast_weights = True
    layers.requires_grad_(True)
    if Trainable(settings.trainable) == Trainable.REFERENCE:
        reference_generator = torch.Generator().manual_seed(settings.seed)
        for layer in layers.layers.values():
            layer.norm.requires_grad_(False)  # the reference trains attn_temp, not norm_temp
            if layer.is_identity():  # untuned: start as the reference does
                layer.reference_output_bias(reference_generator)
    patcher = attach_temporal_layers(trainer, layers)
    loras = {}
    for key in sorted(weight_matrices(layers)) if settings.temporal_rank else ():
        weight = comfy.utils.get_attr(layers, key)
        weight.requires_grad_(False)
        loras[key] = seeded_lora(weight, settings.temporal_rank, generator, device)
        patcher.add_weight_wrapper(key, loras[key])
    return TemporalTrainer(layers, loras)
