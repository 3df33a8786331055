"""DDIM inversion, written in ComfyUI's sigma parameterisation.

ComfyUI samples x = x0 + sigma * eps (unscaled); the UNet sees x / sqrt(1 + sigma^2), which is the
diffusers latent z = sqrt(abar) x0 + sqrt(1 - abar) eps with abar = 1 / (1 + sigma^2).

The reference inverts with timesteps t = 1, 21, ..., 981 (50 steps): each step evaluates the model
on the *current* latent z_cur but with the *next* timestep, then
    x0_hat = (z_cur - sqrt(1 - a_cur) eps) / sqrt(a_cur)
    z_next = sqrt(a_next) x0_hat + sqrt(1 - a_next) eps,
starting from a_cur = alphas_cumprod[0]. In sigma terms that is: feed the same z at sigma_next,
read eps from the model's denoised output (so epsilon and v-prediction models are both right), and
    x_next = x_cur - sigma_cur * eps + sigma_next * eps.
"""

import math

import torch


def inversion_schedule(descending_sigmas: torch.Tensor, sigma_min: float) -> torch.Tensor:
    """ComfyUI's sampling sigmas [s(981), ..., s(1), 0] -> the inversion path [sigma_min, s(1), ..., s(981)].

    sigma_min is the smallest training sigma (alphas_cumprod[0]), where the clean latent is taken to sit.
    """
    positive = descending_sigmas[descending_sigmas > 0].flip(0).to(torch.float32)
    return torch.cat([torch.tensor([sigma_min], dtype=torch.float32), positive.cpu()])


def same_input_at(x: torch.Tensor, sigma_from: float, sigma_to: float) -> torch.Tensor:
    """The unscaled latent that gives the UNet the same input at sigma_to as x gives at sigma_from."""
    return x * math.sqrt((1.0 + sigma_to**2) / (1.0 + sigma_from**2))


def inversion_step(
    x: torch.Tensor, x_model: torch.Tensor, denoised: torch.Tensor, sigma_cur: float, sigma_next: float
) -> torch.Tensor:
    """One reference DDIM inversion step; `denoised` is the model's x0 for input x_model at sigma_next."""
    eps = (x_model - denoised) / sigma_next
    return x + (sigma_next - sigma_cur) * eps


def ddim_step(x: torch.Tensor, denoised: torch.Tensor, sigma: float, sigma_next: float) -> torch.Tensor:
    """One DDIM (eta 0) sampling step in sigma space: keep the step's epsilon, move to sigma_next (Euler)."""
    return x + (sigma_next - sigma) * (x - denoised) / sigma
