"""Training a motion module inside One-Shot Tune: ComfyUI train adapters as weight wrappers on a private clone.

lora: comfy.weight_adapter's LoRA train adapter (up kaiming-initialised, down zero: an exact identity at step 0)
on every attention projection (to_q, to_k, to_v, to_out.0), with alpha = rank so that its delta is up @ down, as
AnimateDiff's motion LoRAs have it. full: a zero-initialised delta on every weight and bias. frozen: nothing.
"""

import math
from dataclasses import dataclass, field

import comfy.utils
import torch
from comfy.weight_adapter.lora import LoRAAdapter
from torch import nn

from ..tav_core.motion_module_file import LowRank, is_projection_key
from ..tav_core.tuning import MotionTraining
from .delta_weight import DeltaWeight


@dataclass
class MotionTrainer:
    patcher: object  # the trainer's clone of the motion-module patcher, carrying the train wrappers
    loras: dict[str, nn.Module] = field(default_factory=dict)  # weight key -> LoraDiff train adapter
    deltas: dict[str, nn.Parameter] = field(default_factory=dict)  # parameter key -> delta

    def parameters(self) -> list[nn.Parameter]:
        lora_params = [p for adapter in self.loras.values() for p in (adapter.lora_up.weight, adapter.lora_down.weight)]
        return lora_params + list(self.deltas.values())

    def learned(self) -> tuple[dict[str, LowRank], dict[str, torch.Tensor]]:
        """The trained LoRAs (scale folded in) and deltas, on the CPU in fp32."""
        loras = {
            key: LowRank(
                (adapter.lora_up.weight * (adapter.alpha / adapter.rank)).detach().float().cpu(),
                adapter.lora_down.weight.detach().float().cpu(),
            )
            for key, adapter in self.loras.items()
        }
        return loras, {key: delta.detach().cpu() for key, delta in self.deltas.items()}


def motion_trainer(
    patcher, training: MotionTraining, rank: int, seed: int, device: torch.device
) -> MotionTrainer:
    """A clone of the motion-module patcher whose chosen weights learn, and those weights' trainable parts.

    The LoRA's up matrices are drawn again from `seed` on the CPU (create_train draws from torch's global
    generator): the same seed gives the same tune on every machine."""
    trainer = MotionTrainer(patcher.clone())
    modules = patcher.model
    generator = torch.Generator().manual_seed(seed)
    if training == MotionTraining.LORA:
        for key in sorted(key for key, _ in modules.named_parameters() if is_projection_key(key)):
            weight = comfy.utils.get_attr(modules, key)
            adapter = LoRAAdapter.create_train(weight, rank=rank, alpha=float(rank))
            with torch.no_grad():
                up = torch.empty(adapter.lora_up.weight.shape)
                nn.init.kaiming_uniform_(up, a=math.sqrt(5), generator=generator)
                adapter.lora_up.weight.copy_(up)
            adapter = adapter.to(device)
            adapter.requires_grad_(True)
            adapter.alpha.requires_grad_(False)
            trainer.patcher.add_weight_wrapper(key, adapter)
            trainer.loras[key] = adapter
    elif training == MotionTraining.FULL:
        for key, param in modules.named_parameters():
            delta = nn.Parameter(torch.zeros(param.shape, device=device, dtype=torch.float32))
            trainer.patcher.add_weight_wrapper(key, DeltaWeight(delta))
            trainer.deltas[key] = delta
    return trainer
