"""A trainable delta on a frozen weight, as a ComfyUI weight function (ModelPatcher.add_weight_wrapper)."""

import torch
from torch import nn


class DeltaWeight(nn.Module):
    """ComfyUI weight function: frozen base weight + trainable delta, computed in the weight's dtype."""

    def __init__(self, delta: nn.Parameter) -> None:
        super().__init__()
        self.delta = delta

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight + self.delta.to(weight.dtype)
