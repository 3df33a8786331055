"""Deterministic weights for modules built with ComfyUI's layers (which skip initialisation)."""

import math

import torch
from torch import nn


@torch.no_grad()
def init_seeded(module: nn.Module, seed: int, zero: tuple[str, ...] = ()) -> None:
    """Fan-in-scaled normal weights, unit norms, zero biases; parameters whose name ends with any of `zero`
    start at exactly zero (residual output layers, as diffusion UNets are usually initialised)."""
    generator = torch.Generator().manual_seed(seed)
    for name, param in sorted(module.named_parameters(), key=lambda item: item[0]):
        if any(name.endswith(suffix) for suffix in zero):
            values = torch.zeros(param.shape)
        elif param.ndim >= 2:
            values = torch.randn(param.shape, generator=generator) / math.sqrt(math.prod(param.shape[1:]))
        elif name.endswith("weight"):
            values = torch.ones(param.shape)
        else:
            values = torch.zeros(param.shape)
        param.copy_(values.to(param.dtype))
