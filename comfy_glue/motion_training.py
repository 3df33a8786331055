"""Training a motion module inside One-Shot Tune: ComfyUI train adapters as weight wrappers on a private clone.

lora: comfy.weight_adapter's LoRA train adapter (train_adapters.seeded_lora) on every attention projection
(to_q, to_k, to_v, to_out.0), its delta up @ down as AnimateDiff's motion LoRAs have it. full: a zero-initialised
delta on every weight and bias. frozen: nothing.
"""

from dataclasses import dataclass, field

import comfy.utils
import torch
from torch import nn

from ..tav_core.motion_module_file import LowRank, is_projection_key
from ..tav_core.tuning import MotionTraining
from .delta_weight import DeltaWeight
from .train_adapters import learned_lora, lora_parameters, seeded_lora


@dataclass
class MotionTrainer:
    patcher: object  # the trainer's clone of the motion-module patcher, carrying the train wrappers
    loras: dict[str, nn.Module] = field(default_factory=dict)  # weight key -> LoraDiff train adapter
    deltas: dict[str, nn.Parameter] = field(default_factory=dict)  # parameter key -> delta

    def parameters(self) -> list[nn.Parameter]:
        return [p for adapter in self.loras.values() for p in lora_parameters(adapter)] + list(self.deltas.values())

    def learned(self) -> tuple[dict[str, LowRank], dict[str, torch.Tensor]]:
        """The trained LoRAs (scale folded in) and deltas, on the CPU in fp32."""
        loras = {key: learned_lora(adapter) for key, adapter in self.loras.items()}
        return loras, {key: delta.detach().cpu() for key, delta in self.deltas.items()}


def motion_trainer(
    patcher, training: MotionTraining, rank: int, seed: int, device: torch.device
) -> MotionTrainer:
    """A clone of the motion-module patcher whose chosen weights learn, and those weights' trainable parts."""
    trainer = MotionTrainer(patcher.clone())
    modules = patcher.model
    generator = torch.Generator().manual_seed(seed)
    if training == MotionTraining.LORA:
        for key in sorted(key for key, _ in modules.named_parameters() if is_projection_key(key)):
            adapter = seeded_lora(comfy.utils.get_attr(modules, key), rank, generator, device)
            trainer.patcher.add_weight_wrapper(key, adapter)
            trainer.loras[key] = adapter
    elif training == MotionTraining.FULL:
        for key, param in modules.named_parameters():
            delta = nn.Parameter(torch.zeros(param.shape, device=device, dtype=torch.float32))
            trainer.patcher.add_weight_wrapper(key, DeltaWeight(delta))
            trainer.deltas[key] = delta
    return trainer
