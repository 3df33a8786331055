"""ComfyUI train adapters for One-Shot Tune: comfy.weight_adapter's LoRA, seeded, and what it learned.

LoRAAdapter.create_train makes up kaiming-initialised and down zero (an exact identity at step 0); it draws
up from torch's global generator, so it is drawn again here from the tune's own seeded generator on the CPU:
the same seed gives the same tune on every machine. alpha = rank, so that the delta is up @ down (the
convention of AnimateDiff's motion LoRAs and of the pack's files, which carry no alpha).
"""

import math

import torch
from comfy.weight_adapter.lora import LoRAAdapter
from torch import nn

from ..tav_core.motion_module_file import LowRank


def seeded_lora(weight: torch.Tensor, rank: int, generator: torch.Generator, device: torch.device) -> nn.Module:
    """A trainable LoRA (LoraDiff) for `weight`, usable as its ComfyUI weight wrapper."""
    adapter = LoRAAdapter.create_train(weight, rank=rank, alpha=float(rank))
    with torch.no_grad():
        up = torch.empty(adapter.lora_up.weight.shape)
        nn.init.kaiming_uniform_(up, a=math.sqrt(5), generator=generator)
        adapter.lora_up.weight.copy_(up)
    adapter = adapter.to(device)
    adapter.requires_grad_(True)
    adapter.alpha.requires_grad_(False)
    return adapter


def lora_parameters(adapter: nn.Module) -> list[nn.Parameter]:
    return [adapter.lora_up.weight, adapter.lora_down.weight]


def learned_lora(adapter: nn.Module) -> LowRank:
    """The adapter's LoRA with its scale folded into up, on the CPU in fp32: weight + up @ down."""
    return LowRank(
        (adapter.lora_up.weight * (adapter.alpha / adapter.rank)).detach().float().cpu(),
        adapter.lora_down.weight.detach().float().cpu(),
    )
