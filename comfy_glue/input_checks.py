"""Checks shared by the nodes that take an inflated MODEL and a video LATENT; errors name node and input."""

import torch

from ..tav_core.errors import TAVInputError
from .motion_injection import check_frame_limit
from .unet_inflation import Inflation, inflation_of


def require_inflated(model, node: str) -> Inflation:
    inflation = inflation_of(model)
    if inflation is None:
        raise TAVInputError(
            node, "model", "this MODEL is not inflated (it is an image model).",
            "Connect it through Inflate UNet (and One-Shot Tune) first.",
        )
    return inflation


def require_video_latent(model, latent: dict, node: str, input_name: str, window: int = 0) -> torch.Tensor:
    """The LATENT's frames, once they make a video this model can run (a motion module's frame limit applies to
    the `window` the pack runs at a time, where one is set)."""
    samples = latent.get("samples") if isinstance(latent, dict) else None
    if not isinstance(samples, torch.Tensor) or samples.ndim != 4:
        raise TAVInputError(node, input_name, "expected a LATENT of video frames (batch = frames).")
    channels = model.model.latent_format.latent_channels
    if samples.shape[1] != channels:
        raise TAVInputError(
            node, input_name, f"{samples.shape[1]} latent channels, but this model uses {channels}.",
            "Encode the frames with this checkpoint's VAE.",
        )
    if samples.shape[0] < 2:
        raise TAVInputError(node, input_name, f"{samples.shape[0]} frame: a video needs at least 2 frames.")
    inflation = inflation_of(model)
    frames = min(samples.shape[0], window) if window else samples.shape[0]
    check_frame_limit(model, inflation.motion if inflation else None, frames, node, input_name)
    return samples
