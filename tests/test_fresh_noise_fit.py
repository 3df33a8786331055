"""One-Shot Tune's fresh-noise steps: a share of the steps trains at the top of the schedule from noise alone,
the input text-to-video starts from, towards the clip, so the tuned model lays the clip out from fresh noise."""

import numpy as np
import pytest
import torch
from comfyui_tune_a_video.comfy_glue.demo_model import DEMO_MOTION_FILE
from comfyui_tune_a_video.comfy_glue.one_shot_tune import tune
from comfyui_tune_a_video.comfy_glue.unet_inflation import inflate_model
from comfyui_tune_a_video.nodes.load_demo_model import LoadDemoModel
from comfyui_tune_a_video.nodes.load_motion_module import LoadMotionModule
from comfyui_tune_a_video.nodes.one_shot_tune import NODE as TUNE
from comfyui_tune_a_video.nodes.one_shot_tune import OneShotTune
from comfyui_tune_a_video.shapes_demo.metrics import score_motion
from comfyui_tune_a_video.shapes_demo.world import parse_caption, random_clip
from comfyui_tune_a_video.tav_core.inflation_config import InflationConfig
from comfyui_tune_a_video.tav_core.tuning import TuneSettings, draw_step, fresh_noise_floor
from tav_dev.motion_gate import sample_videos, video_model
from tav_dev.tiny_models import text_cond, tiny_unet
from tav_dev.unet_harness import apply_unet, sliding_square

import nodes as comfy_nodes

TIMESTEPS = 1000  # the tiny UNets' schedule
SHAPE = (4, 4, 8, 8)


def test_without_fresh_steps_the_draws_are_the_whole_clip_recipes():
    """share 0 draws exactly what the recipe draws (one timestep, then the noise), so earlier tunes reproduce."""
    drawing, recipe = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    for _ in range(5):
        drawn = draw_step(drawing, TIMESTEPS, SHAPE, 0, 0.0)
        assert drawn.timestep == int(torch.randint(0, TIMESTEPS, (1,), generator=recipe)) and not drawn.fresh
        torch.testing.assert_close(drawn.noise, torch.randn(SHAPE, generator=recipe), rtol=0, atol=0)


def test_fresh_steps_come_at_their_share_and_from_the_top_tenth_of_the_schedule():
    generator = torch.Generator().manual_seed(0)
    draws = [draw_step(generator, TIMESTEPS, SHAPE, 0, 0.3) for _ in range(3000)]
    fresh = np.array([d.timestep for d in draws if d.fresh])
    others = np.array([d.timestep for d in draws if not d.fresh])
    assert fresh_noise_floor(TIMESTEPS) == 900
    assert len(fresh) / len(draws) == pytest.approx(0.3, abs=0.03)
    assert fresh.min() >= 900 and fresh.min() < 905 and fresh.max() == TIMESTEPS - 1
    assert others.min() < 10 and others.max() > 990, "the other steps keep the whole schedule"
    assert all(d.fresh for d in (draw_step(generator, TIMESTEPS, SHAPE, 0, 1.0) for _ in range(50)))


def test_a_fresh_step_feeds_the_unet_noise_alone_and_asks_it_for_the_clip():
    """Every step at share 1: the UNet's input is the sampler's empty latent noised at the drawn top timestep,
    and the loss is the epsilon error of the prediction that makes the clip, as on any step."""
    model = inflate_model(tiny_unet("sd1", seed=0), InflationConfig(), "Inflate UNet")
    seen = []
    first_conv = model.model.diffusion_model.input_blocks[0][0]
    handle = first_conv.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach().clone()))
    settings = TuneSettings(steps=1, learning_rate=1e-2, seed=4, gradient_checkpointing="off", fresh_noise_share=1.0)
    try:
        result = tune(model, sliding_square(), text_cond("sd1", 1), settings, TUNE)
    finally:
        handle.remove()
    model_sampling = model.get_model_object("model_sampling")
    x0 = model.model.process_latent_in(sliding_square()["samples"])
    drawn = draw_step(torch.Generator().manual_seed(4), TIMESTEPS, x0.shape, 0, 1.0)
    assert drawn.fresh and drawn.timestep >= fresh_noise_floor(TIMESTEPS)
    sigma = float(model_sampling.sigmas[drawn.timestep])
    sigmas = torch.full((x0.shape[0],), sigma)
    noisy = model_sampling.noise_scaling(sigmas, drawn.noise, torch.zeros_like(x0))
    torch.testing.assert_close(seen[0], model_sampling.calculate_input(sigmas, noisy), rtol=1e-6, atol=1e-6)
    context = text_cond("sd1", 1)[0][0].expand(x0.shape[0], -1, -1)
    denoised = apply_unet(model, noisy, sigma, context, [0])
    assert result.losses[0] == pytest.approx(float((((denoised - x0) / -sigma) ** 2).mean()), rel=1e-4)
    assert result.weights.info["fresh_noise_share"] == "1.0"


def test_a_share_outside_0_to_1_is_refused_before_tuning():
    message = OneShotTune.validate_inputs(steps=10, fresh_noise_share=1.5)
    assert message == "One-Shot Tune: input 'fresh_noise_share': 1.5 is outside 0.0 .. 1.0."


def test_fitting_from_fresh_noise_brings_the_clips_path_back_on_the_shapes_world():
    """The demo motion module tuned to a straight-line clip as a motion LoRA (shapes_motion's settings): text-to-video
    from fresh noise with the clip's caption follows its path within 3 px with every step a fresh-noise one, and
    twice as far off without them, where the tuned model reads the layout out of the noise."""
    model, clip, vae = LoadDemoModel.execute().result
    motion = LoadMotionModule.execute(DEMO_MOTION_FILE.name).result[0]
    source = random_clip(1, frames=8, path="linear")
    (latents,) = comfy_nodes.VAEEncode().encode(vae, torch.from_numpy(source.frames).float() / 255.0)
    (conditioning,) = comfy_nodes.CLIPTextEncode().encode(clip, source.caption)
    errors = {}
    for share in (0.0, 1.0):
        tuned = OneShotTune.execute(video_model(model, motion), latents, conditioning, 300, 3e-4, 1, "off", "auto",
                                    caption=source.caption, fresh_noise_share=share).result[0]
        with torch.inference_mode():
            (frames,) = sample_videos(tuned, clip, vae, [source.caption], 8, seed=1)
        errors[share] = score_motion(frames, parse_caption(source.caption), source.centroids).trajectory_error
    assert errors[1.0] <= 3.0 and errors[0.0] >= 2 * errors[1.0], errors
