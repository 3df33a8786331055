"""Evenly spaced samples of a weight tensor: enough to tell one checkpoint's weights from another's, cheaply."""

import torch

FINGERPRINT_SAMPLES = 64


def fingerprint_indices(numel: int) -> torch.Tensor:
    """FINGERPRINT_SAMPLES evenly spaced element indices, computed in float64: float32 cannot count past
    2**24, and SD1.5's largest convolutions have 29.5M elements (its last index would round out of range)."""
    count = min(FINGERPRINT_SAMPLES, numel)
    return torch.linspace(0, numel - 1, count, dtype=torch.float64).round().long()


def sampled_bytes(weight: torch.Tensor) -> bytes:
    """The sampled elements rounded to fp16, as bytes: the same for a file in fp16, bf16 or fp32."""
    flat = weight.detach().reshape(-1)
    return flat[fingerprint_indices(flat.numel()).to(flat.device)].float().half().cpu().numpy().tobytes()
