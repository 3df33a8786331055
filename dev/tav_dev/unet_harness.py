"""Run ComfyUI models the way ComfyUI does: model loading, patches, wrappers, the real samplers and progress hooks."""

from contextlib import contextmanager

import comfy.model_management
import comfy.model_sampling
import comfy.patcher_extension
import comfy.sample
import comfy.samplers
import comfy.utils
import torch
from comfyui_tune_a_video.comfy_glue.tuned_weights import tuned_q_shapes, unet_fingerprint
from comfyui_tune_a_video.comfy_glue.unet_inflation import inflate_model, inflation_of, temporal_layers_of
from comfyui_tune_a_video.tav_core.inflation_config import InflationConfig
from comfyui_tune_a_video.tav_core.tuned_weights_file import TunedWeights, to_file_contents
from comfyui_tune_a_video.tav_core.weights_file import save_atomically

from tav_dev.tiny_models import CONTEXT_DIM, fill_seeded


def load_for_inference(patcher) -> None:
    """Load the UNet and its additional models (temporal layers), applying object patches, as sampling does."""
    comfy.model_management.load_models_gpu([patcher, *patcher.get_nested_additional_models()])


def apply_unet(
    patcher, x: torch.Tensor, sigma: float, context: torch.Tensor, cond_or_uncond: list[int], **conds
) -> torch.Tensor:
    """One denoised prediction through BaseModel.apply_model with the patcher's transformer options (`conds`:
    further model inputs, such as SDXL's y)."""
    load_for_inference(patcher)
    options = comfy.patcher_extension.copy_nested_dicts(patcher.model_options["transformer_options"])
    options["cond_or_uncond"] = list(cond_or_uncond)
    sigmas = torch.full((x.shape[0],), sigma)
    with torch.inference_mode():
        return patcher.model.apply_model(x, sigmas, c_crossattn=context, transformer_options=options, **conds)


def sliding_square(frames: int = 4, size: int = 8) -> dict:
    """A LATENT of one clip: a 3x3 square moving right one latent pixel per frame over a flat background."""
    samples = torch.full((frames, 4, size, size), -0.5)
    for f in range(frames):
        samples[f, :, 2:5, 1 + f : 4 + f] = 1.0
    return {"samples": samples}


def seeded_prediction(patcher, frames: int = 4, size: int = 8, seed: int = 5) -> torch.Tensor:
    """One video's denoised prediction at sigma 2 from seeded latents and text context (a tiny model's width)."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(frames, 4, size, size, generator=generator)
    context = torch.randn(1, 77, CONTEXT_DIM, generator=generator).expand(frames, -1, -1)
    return apply_unet(patcher, x, 2.0, context, [0])


def denoise_via_sampler(patcher, latent: torch.Tensor, sigma: float, positive, negative, cfg: float) -> torch.Tensor:
    """The CFG-combined denoised latent through ComfyUI's real sampling path (one Euler step to sigma 0)."""
    sampler = comfy.samplers.sampler_object("euler")
    sigmas = torch.tensor([sigma, 0.0])
    noise = torch.zeros_like(latent)
    with torch.inference_mode():
        return comfy.sample.sample_custom(
            patcher, noise, cfg, sampler, sigmas, positive, negative, latent, disable_pbar=True, seed=0
        )


def randomize_temporal(patcher, seed: int) -> None:
    """Give the temporal layers non-zero weights, as after tuning, so the temporal path is live."""
    fill_seeded(temporal_layers_of(patcher), seed)


def blend_with_gaussian_denoiser(patcher, latent: torch.Tensor, spread: float, unet_share: float) -> None:
    """Make a random-weight UNet behave like a trained one for DDIM round trips.

    DDIM inversion is only well-posed through a model that denoises; a random UNet does not. This
    DIFFUSION_MODEL wrapper (ComfyUI's own hook) returns the exact prediction for data distributed as
    N(latent, spread^2) - the posterior mean, converted to the model's epsilon or v target - plus
    `unet_share` of the real (inflated) UNet's output, so the UNet and all patches still run.
    """
    base = patcher.model
    model_sampling = base.model_sampling
    mean = base.process_latent_in(latent)
    v_prediction = isinstance(model_sampling, comfy.model_sampling.V_PREDICTION)

    def wrapper(executor, x, timesteps, *args, **kwargs):
        out = executor(x, timesteps, *args, **kwargs)
        sigma = model_sampling.sigma(timesteps).view(-1, 1, 1, 1)
        unscaled = x * torch.sqrt(1 + sigma**2)
        target = mean.to(x).repeat(x.shape[0] // mean.shape[0], 1, 1, 1)
        denoised = target + spread**2 / (spread**2 + sigma**2) * (unscaled - target)
        if v_prediction:
            ideal = (unscaled / (sigma**2 + 1) - denoised) * torch.sqrt(sigma**2 + 1) / sigma
        else:
            ideal = (unscaled - denoised) / sigma
        return ideal + unet_share * out

    comfy.patcher_extension.add_wrapper_with_key(
        comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, "test_gaussian_denoiser", wrapper,
        patcher.model_options, is_model_options=True,
    )


def seeded_tuned_weights(base, seed: int, config: InflationConfig | None = None) -> TunedWeights:
    """What a tune of `base` would write, with seeded random to_q deltas and temporal layers instead of training."""
    model = inflate_model(base, config or InflationConfig(), "Inflate UNet")
    inflation = inflation_of(model)
    generator = torch.Generator().manual_seed(seed)
    q_deltas = {key: 0.05 * torch.randn(shape, generator=generator) for key, shape in tuned_q_shapes(model).items()}
    temporal = temporal_layers_of(model)
    if temporal is not None:
        fill_seeded(temporal, seed)
    state = {key: value.detach().clone() for key, value in temporal.state_dict().items()} if temporal else {}
    return TunedWeights(q_deltas, state, inflation.config, unet_fingerprint(model), {"seed": str(seed)})


def write_tuned_weights(path, weights: TunedWeights, dtype: torch.dtype = torch.float16) -> None:
    save_atomically(path, *to_file_contents(weights, dtype))


@contextmanager
def progress_hook(hook):
    """ComfyUI's global progress hook (what its server installs) set to `hook` for the block; afterwards unset, and
    a Cancel pressed inside it released."""
    comfy.utils.set_progress_bar_global_hook(hook)
    try:
        yield
    finally:
        comfy.utils.set_progress_bar_global_hook(None)
        comfy.model_management.interrupt_current_processing(False)
