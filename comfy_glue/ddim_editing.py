"""DDIM inversion of a source video and sampling of the edit, through ComfyUI's own samplers.

The inverted LATENT holds ComfyUI's unscaled latent at the last inverted sigma (after
process_latent_out), so TAV Sample and the stock KSamplerAdvanced (add_noise disabled, ddim,
ddim_uniform, same steps, start_at_step as recorded) both start from it.
"""

from dataclasses import asdict

import comfy.model_management
import comfy.sample
import comfy.samplers
import comfy.utils
import latent_preview
import torch
from tqdm.auto import trange

from ..tav_core.ddim import inversion_schedule, inversion_step, same_input_at
from ..tav_core.errors import TAVInputError
from .frame_windowing import check_window, in_windows
from .input_checks import require_inflated, require_video_latent
from .inversion_record import INVERSION_KEY, SCHEDULER, InversionRecord, remember_inversion
from .progress import check_cancel
from .video_control import check_hint_counts


def ddim_sigmas(model, steps: int) -> torch.Tensor:
    return comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), SCHEDULER, steps).cpu()


def strength_sigmas(model, steps: int, strength: float, node: str) -> tuple[int, torch.Tensor]:
    """(start_at_step, descending sigmas from there to 0): an inversion at `strength` walks the last
    round(strength * steps) steps of the sampling schedule (at least one), so sampling starts that far up."""
    if not 0 < strength <= 1:
        raise TAVInputError(node, "inversion_strength", f"{strength}: use a value in (0, 1].")
    sigmas = ddim_sigmas(model, steps)
    total = len(sigmas) - 1
    start_at_step = total - max(1, round(total * strength))
    return start_at_step, sigmas[start_at_step:]


def sample_ddim_inversion(model, x, sigmas, extra_args=None, callback=None, disable=None):
    """k-diffusion-style sampler function: walks the clean latent x up the (flipped) DDIM schedule."""
    extra_args = {} if extra_args is None else extra_args
    model_sampling = model.inner_model.model_patcher.get_model_object("model_sampling")
    schedule = inversion_schedule(sigmas, float(model_sampling.sigma_min)).tolist()
    x = same_input_at(x, 0.0, schedule[0])  # the clean latent, read as sitting at alphas_cumprod[0]
    ones = x.new_ones([x.shape[0]])
    for i in trange(len(schedule) - 1, disable=disable):
        sigma_cur, sigma_next = schedule[i], schedule[i + 1]
        x_model = same_input_at(x, sigma_cur, sigma_next)
        denoised = model(x_model, sigma_next * ones, **extra_args)
        x = inversion_step(x, x_model, denoised, sigma_cur, sigma_next)
        if callback is not None:
            callback({"x": x, "i": i, "sigma": sigma_next, "sigma_hat": sigma_next, "denoised": denoised})
    return x


def cancellable(callback):
    """A sampler step callback that also honours Cancel at every step (inversion and sampling alike): newer
    ComfyUI throttles progress updates, and so the server hook that raises on Cancel, to one per 100 ms."""

    def step(*args):
        check_cancel()
        return callback(*args)

    return step


def inversion_sampler() -> comfy.samplers.KSAMPLER:
    return comfy.samplers.KSAMPLER(sample_ddim_inversion)


def run_inversion(model, samples: torch.Tensor, conditioning: list, descending: torch.Tensor, callback) -> torch.Tensor:
    """The clean `samples` walked up the flipped `descending` schedule; callback(i, denoised, x, total) sees each
    step's latent x in the model's (process_latent_in) space."""
    return comfy.sample.sample_custom(
        model, torch.zeros_like(samples), 1.0, inversion_sampler(), descending, conditioning, conditioning,
        samples, callback=callback, disable_pbar=not comfy.utils.PROGRESS_BAR_ENABLED, seed=0,
    )


def invert_video(
    model, latent: dict, conditioning: list, steps: int, strength: float, node: str, window: int = 0, overlap: int = 0
) -> dict:
    """window/overlap: run the UNet on overlapping windows of that many frames (0: the whole clip at once)."""
    require_inflated(model, node)
    samples = require_video_latent(model, latent, node, "latents", window)
    check_window(window, overlap, samples.shape[0], node)
    check_hint_counts(conditioning, samples.shape[0], node, "conditioning")
    start_at_step, descending = strength_sigmas(model, steps, strength, node)
    model = in_windows(model, window, overlap)
    inverted_samples = run_inversion(
        model, samples, conditioning, descending,
        cancellable(latent_preview.prepare_callback(model, len(descending) - 1)),
    )
    record = InversionRecord(
        steps=steps, start_at_step=start_at_step, sigmas=tuple(descending.tolist()),
        shape=tuple(inverted_samples.shape),
    )
    remember_inversion(inverted_samples, record)
    return {**latent, "samples": inverted_samples, INVERSION_KEY: asdict(record)}


def sample_video(
    model, positive: list, negative: list, latent: dict, steps: int, cfg: float, eta: float, seed: int, node: str,
    window: int = 0, overlap: int = 0,
) -> dict:
    """DDIM (eta 0) or DDIM-eta sampling; from an inversion when the LATENT is one, else from fresh noise.

    window/overlap: run the UNet on overlapping windows of that many frames (0: the whole clip at once)."""
    require_inflated(model, node)
    samples = require_video_latent(model, latent, node, "latent", window)
    check_window(window, overlap, samples.shape[0], node)
    check_hint_counts(positive, samples.shape[0], node, "positive")
    check_hint_counts(negative, samples.shape[0], node, "negative")
    record = InversionRecord.of(latent)
    if record is None:
        sigmas = ddim_sigmas(model, steps)
        noise = comfy.sample.prepare_noise(samples, seed)
    else:
        sigmas = inversion_sigmas(model, samples, record, steps, node, "latent")
        noise = torch.zeros_like(samples)
    model = in_windows(model, window, overlap)
    sampler = (
        comfy.samplers.sampler_object("ddim") if eta == 0
        else comfy.samplers.ksampler("euler_ancestral", {"eta": eta, "s_noise": 1.0})
    )
    result = comfy.sample.sample_custom(
        model, noise, cfg, sampler, sigmas, positive, negative, samples,
        callback=cancellable(latent_preview.prepare_callback(model, len(sigmas) - 1)),
        disable_pbar=not comfy.utils.PROGRESS_BAR_ENABLED, seed=seed,
    )
    out = {key: value for key, value in latent.items() if key != INVERSION_KEY}
    out["samples"] = result
    return out


def inversion_sigmas(
    model, samples: torch.Tensor, record: InversionRecord, steps: int, node: str, input_name: str
) -> torch.Tensor:
    """The descending sigmas that walk an inverted LATENT back, once its record fits these steps and this model."""
    if record.steps != steps:
        raise TAVInputError(
            node, "steps", f"{steps}, but the latent was inverted with {record.steps} steps.",
            f"Set steps to {record.steps}, or invert again with {steps}.",
        )
    if tuple(samples.shape) != record.shape:
        raise TAVInputError(
            node, input_name, f"shape {tuple(samples.shape)}, but the inversion produced {record.shape}.",
            "Connect DDIM Invert Video's output unchanged (no batching, cropping or resizing in between).",
        )
    sigmas = ddim_sigmas(model, steps)[record.start_at_step:]
    schedule = record.schedule_problem(sigmas)
    if schedule is not None:
        raise TAVInputError(
            node, "model", f"its noise schedule differs from the model the latent was inverted with ({schedule}).",
            "Invert and sample with the same checkpoint.",
        )
    return sigmas
