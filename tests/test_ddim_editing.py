"""DDIM Invert Video, TAV Sample and the inversion SAMPLER on tiny ComfyUI UNets."""

import math

import comfy.model_management
import comfy.utils
import comfy_extras.nodes_custom_sampler as custom_sampler
import pytest
import torch
from comfyui_tune_a_video.comfy_glue.unet_inflation import inflate_model
from comfyui_tune_a_video.nodes.ddim_invert_video import DDIMInvertVideo
from comfyui_tune_a_video.nodes.inversion_sampler import DDIMInversionSampler
from comfyui_tune_a_video.nodes.tav_sample import TAVSample
from comfyui_tune_a_video.tav_core.errors import TAVInputError
from comfyui_tune_a_video.tav_core.inflation_config import InflationConfig
from tav_dev.tiny_models import text_cond, tiny_unet
from tav_dev.unet_harness import apply_unet, blend_with_gaussian_denoiser, progress_hook, randomize_temporal

import nodes as comfy_nodes

FRAMES, SIZE = 4, 8


def source_video() -> dict:
    """A bright square sliding right over a darker, textured background (raw VAE-latent scale)."""
    generator = torch.Generator().manual_seed(3)
    samples = 0.3 * torch.randn(1, 4, SIZE, SIZE, generator=generator).expand(FRAMES, -1, -1, -1).clone()
    for f in range(FRAMES):
        samples[f, :, 2:5, 1 + f: 4 + f] += 1.0
    return {"samples": samples}


def video_model(kind: str):
    model = inflate_model(tiny_unet(kind, seed=0), InflationConfig(), "Inflate UNet")
    randomize_temporal(model, seed=4)
    return model


def run_stock_node(node_class: type, *inputs) -> tuple:
    """Outputs of one of ComfyUI's own nodes, defined as a V3 node or (older hosts, e.g. 0.3.64) a V1 node."""
    if hasattr(node_class, "define_schema"):
        return tuple(node_class.execute(*inputs).result)
    return tuple(getattr(node_class(), node_class.FUNCTION)(*inputs))


def invert(model, latent, cond, steps, strength=1.0) -> dict:
    return DDIMInvertVideo.execute(model, latent, cond, steps, strength).result[0]


def sample(model, positive, negative, latent, steps, cfg, eta=0.0, seed=0) -> dict:
    return TAVSample.execute(model, positive, negative, latent, steps, cfg, eta, seed).result[0]


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def reference_inversion(model, latent: torch.Tensor, context: torch.Tensor, steps: int, inverted: int):
    """The reference's DDIM inversion, from its formula, in float64 (diffusers latent space z)."""
    model_sampling = model.get_model_object("model_sampling")
    sigma_table = model_sampling.sigmas.double()
    alphas_cumprod = 1.0 / (1.0 + sigma_table**2)
    stride = 1000 // steps
    z = latent.double() * model.model.latent_format.scale_factor
    for t in range(1, 1 + stride * inverted, stride):
        a_next = alphas_cumprod[t]
        a_cur = alphas_cumprod[t - stride] if t - stride >= 0 else alphas_cumprod[0]
        sigma = float(sigma_table[t])
        model_input = (z * math.sqrt(1 + sigma**2)).float()  # ComfyUI's model sees input / sqrt(1 + sigma^2) = z
        denoised = apply_unet(model, model_input, sigma, context, [0]).double()
        eps = (model_input.double() - denoised) / sigma
        x0 = (z - (1 - a_cur).sqrt() * eps) / a_cur.sqrt()
        z = a_next.sqrt() * x0 + (1 - a_next).sqrt() * eps
    sigma_last = float(sigma_table[1 + stride * (inverted - 1)])
    return z * math.sqrt(1 + sigma_last**2) / model.model.latent_format.scale_factor


@pytest.mark.parametrize("kind", ["sd1", "sd2"])
def test_inversion_matches_the_reference_formula_step_by_step(kind):
    model, cond, steps = video_model(kind), text_cond(kind, 1), 5
    latent = source_video()
    context = cond[0][0].expand(FRAMES, -1, -1)
    for inverted in range(1, steps + 1):
        got = invert(model, latent, cond, steps, strength=inverted / steps)
        assert got["tav_inversion"]["start_at_step"] == steps - inverted
        expected = reference_inversion(model, latent["samples"], context, steps, inverted)
        assert relative_error(got["samples"].double(), expected) < 1e-5, inverted


def denoising_video_model(kind: str, source: dict):
    """See blend_with_gaussian_denoiser: a random UNet is no denoiser, and DDIM round trips need one."""
    model = video_model(kind)
    blend_with_gaussian_denoiser(model, source["samples"], spread=0.05, unet_share=0.02)
    return model


@pytest.mark.parametrize("kind", ["sd1", "sd2"])
def test_invert_then_sample_reconstructs_the_source(kind):
    source = source_video()
    model, cond = denoising_video_model(kind, source), text_cond(kind, 1)
    errors = {}
    for steps in (20, 50, 200):
        reconstructed = sample(model, cond, cond, invert(model, source, cond, steps), steps, cfg=1.0)
        errors[steps] = relative_error(reconstructed["samples"], source["samples"])
    assert errors[50] < 0.02, errors
    assert errors[200] < errors[20], errors


def test_partial_inversion_keeps_more_of_the_source():
    source = source_video()
    model, cond, other = denoising_video_model("sd1", source), text_cond("sd1", 1), text_cond("sd1", 2)
    errors = {
        strength: relative_error(
            sample(model, other, other, invert(model, source, cond, 20, strength), 20, cfg=1.0)["samples"],
            source["samples"],
        )
        for strength in (0.5, 1.0)
    }
    assert errors[0.5] < errors[1.0], errors


@pytest.mark.parametrize("strength", [1.0, 0.5])
def test_tav_sample_equals_stock_ksampler_advanced(strength):
    model, steps = video_model("sd1"), 10
    positive, negative = text_cond("sd1", 5), text_cond("sd1", 6)
    inverted = invert(model, source_video(), text_cond("sd1", 1), steps, strength)
    ours = sample(model, positive, negative, inverted, steps, cfg=7.5)
    start = inverted["tav_inversion"]["start_at_step"]
    with torch.inference_mode():
        (stock,) = comfy_nodes.KSamplerAdvanced().sample(
            model, "disable", 0, steps, 7.5, "ddim", "ddim_uniform", positive, negative, inverted, start, 10000,
            "disable",
        )
    torch.testing.assert_close(ours["samples"], stock["samples"], atol=1e-5, rtol=1e-5)


def test_inversion_sampler_in_stock_sampler_custom_equals_the_node():
    # 5 divides 1000: for other counts ComfyUI's BasicScheduler keeps `steps` of ddim_uniform's steps + 1 sigmas.
    model, cond, steps = video_model("sd1"), text_cond("sd1", 1), 5
    latent = source_video()
    (sigmas,) = run_stock_node(custom_sampler.BasicScheduler, model, "ddim_uniform", steps, 1.0)
    (sampler,) = DDIMInversionSampler.execute().result
    with torch.inference_mode():
        out, _ = run_stock_node(custom_sampler.SamplerCustom, model, False, 0, 1.0, cond, cond, sampler, sigmas, latent)
    torch.testing.assert_close(out["samples"], invert(model, latent, cond, steps)["samples"], atol=1e-6, rtol=1e-6)


def test_eta_and_fresh_noise_use_the_seed():
    model, cond = video_model("sd1"), text_cond("sd1", 1)
    inverted = invert(model, source_video(), cond, 8)
    deterministic = sample(model, cond, cond, inverted, 8, 3.0, eta=0.0, seed=1)["samples"]
    assert torch.equal(sample(model, cond, cond, inverted, 8, 3.0, eta=0.0, seed=2)["samples"], deterministic)
    noisy = {seed: sample(model, cond, cond, inverted, 8, 3.0, eta=1.0, seed=seed)["samples"] for seed in (1, 2)}
    assert not torch.allclose(noisy[1], noisy[2])
    empty = {"samples": torch.zeros(FRAMES, 4, SIZE, SIZE)}
    fresh = {seed: sample(model, cond, cond, empty, 8, 3.0, seed=seed)["samples"] for seed in (1, 1, 2)}
    assert torch.isfinite(fresh[1]).all() and not torch.allclose(fresh[1], fresh[2])
    assert "tav_inversion" not in sample(model, cond, cond, inverted, 8, 3.0)


def test_stock_sampler_misuse_of_an_inversion_is_reported():
    model, cond, steps = video_model("sd1"), text_cond("sd1", 1), 8
    inverted = invert(model, source_video(), cond, steps)
    with torch.inference_mode():
        with pytest.raises(ValueError, match="DDIM inversion .* noise is added"):
            comfy_nodes.KSamplerAdvanced().sample(
                model, "enable", 0, steps, 5.0, "ddim", "ddim_uniform", cond, cond, inverted, 0, 10000, "disable"
            )
        with pytest.raises(ValueError, match="sigmas run 10 steps .* instead of 8 steps"):
            comfy_nodes.KSamplerAdvanced().sample(
                model, "disable", 0, 10, 5.0, "ddim", "ddim_uniform", cond, cond, inverted, 0, 10000, "disable"
            )


def test_bad_inputs_are_refused_with_node_and_input():
    model, cond = video_model("sd1"), text_cond("sd1", 1)
    wrong_channels = {"samples": torch.zeros(FRAMES, 16, SIZE, SIZE)}
    with pytest.raises(TAVInputError, match="DDIM Invert Video: input 'latents': 16 latent channels"):
        invert(model, wrong_channels, cond, 5)
    with pytest.raises(TAVInputError, match="DDIM Invert Video: input 'latents': 1 frame"):
        invert(model, {"samples": torch.zeros(1, 4, SIZE, SIZE)}, cond, 5)
    with pytest.raises(TAVInputError, match="DDIM Invert Video: input 'model': this MODEL is not inflated.*Inflate"):
        invert(tiny_unet("sd1"), source_video(), cond, 5)
    with pytest.raises(TAVInputError, match="TAV Sample: input 'model': this MODEL is not inflated"):
        sample(tiny_unet("sd1"), cond, cond, source_video(), 5, 3.0)

    inverted = invert(model, source_video(), cond, 5)
    with pytest.raises(TAVInputError, match="TAV Sample: input 'steps': 7, but the latent was inverted with 5"):
        sample(model, cond, cond, inverted, 7, 3.0)
    cropped = {**inverted, "samples": inverted["samples"][:, :, :4, :4]}
    with pytest.raises(TAVInputError, match=r"TAV Sample: input 'latent': shape \(4, 4, 4, 4\), but the inversion"):
        sample(model, cond, cond, cropped, 5, 3.0)


@pytest.mark.parametrize("node", ["invert", "sample"])
def test_cancel_stops_inversion_and_sampling(node):
    model, cond, steps = video_model("sd1"), text_cond("sd1", 1), 10
    inverted = invert(model, source_video(), cond, steps)
    seen, unet_calls = [], []

    def press_cancel_at_third_step(apply_model, args):  # deterministic, whatever the progress bar's throttling
        unet_calls.append(args["timestep"])
        if len(unet_calls) == 3:
            comfy.model_management.interrupt_current_processing(True)
        return apply_model(args["input"], args["timestep"], **args["c"])

    def hook(value, total, preview, node_id=None):  # as ComfyUI's server hook: raises once Cancel is pressed
        seen.append(value)
        comfy.model_management.throw_exception_if_processing_interrupted()

    model = model.clone()
    model.set_model_unet_function_wrapper(press_cancel_at_third_step)

    with progress_hook(hook), pytest.raises(comfy.model_management.InterruptProcessingException):
        if node == "invert":
            invert(model, source_video(), cond, steps)
        else:
            sample(model, cond, cond, inverted, steps, 5.0)
    assert len(unet_calls) == 3  # nothing ran past the step at which Cancel was pressed
    assert max(seen) <= 3
