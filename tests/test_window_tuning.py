"""One-Shot Tune in windows: each step trains on a drawn window of consecutive frames, so memory follows the
window; with the clip anchor, a later window reads the clip's frame 0 as the clip's first window sees it."""

from functools import partial

import pytest
import torch
from comfyui_tune_a_video.comfy_glue.one_shot_tune import tune
from comfyui_tune_a_video.comfy_glue.unet_inflation import inflate_model
from comfyui_tune_a_video.nodes.one_shot_tune import NODE as TUNE
from comfyui_tune_a_video.nodes.one_shot_tune import OneShotTune
from comfyui_tune_a_video.tav_core.errors import TAVInputError
from comfyui_tune_a_video.tav_core.inflation_config import AttentionMode, InflationConfig
from comfyui_tune_a_video.tav_core.tuning import TuneSettings, draw_step
from tav_dev.tiny_models import text_cond, tiny_unet
from tav_dev.unet_harness import apply_unet

FRAMES, SIZE, WINDOW = 8, 8, 3
TIMESTEPS = 1000  # the tiny UNets' schedule


def clip() -> dict:
    return {"samples": torch.randn(FRAMES, 4, SIZE, SIZE, generator=torch.Generator().manual_seed(11))}


def seed_with_late_window(steps: int = 1) -> int:
    """A seed whose first `steps` windows all start after frame 0."""
    for seed in range(100):
        generator = torch.Generator().manual_seed(seed)
        if all(draw_step(generator, TIMESTEPS, (FRAMES, 4, SIZE, SIZE), WINDOW).start > 0 for _ in range(steps)):
            return seed
    raise AssertionError("no such seed")


def windowed(model, steps: int, seed: int, window: int = WINDOW, anchor: str = "clip", scope: str = "off"):
    settings = TuneSettings(steps=steps, learning_rate=1e-2, seed=seed, gradient_checkpointing=scope, window=window,
                            window_anchor=anchor)
    return tune(model, clip(), text_cond("sd1", 1), settings, TUNE)


def first_frame_model():
    """Each frame's prediction depends on itself and frame 0 alone."""
    config = InflationConfig(attention=AttentionMode.FIRST_FRAME, temporal_layers=False)
    return inflate_model(tiny_unet("sd1", seed=0), config, "Inflate UNet")


def test_each_step_trains_on_its_drawn_window_only():
    """The UNet's input, step by step, is exactly the drawn window's noised frames; the clip anchor's extra pass
    (no gradient) sees the clip's first window at the same noise."""
    model = inflate_model(tiny_unet("sd1", seed=0), InflationConfig(), "Inflate UNet")
    seen = []
    first_conv = model.model.diffusion_model.input_blocks[0][0]
    handle = first_conv.register_forward_pre_hook(lambda m, args: seen.append((args[0].detach().clone(),
                                                                               torch.is_grad_enabled())))
    seed, steps = 3, 4
    try:
        windowed(model, steps, seed)
    finally:
        handle.remove()
    model_sampling = model.get_model_object("model_sampling")
    x0 = model.model.process_latent_in(clip()["samples"])
    generator = torch.Generator().manual_seed(seed)
    expected = []
    for _ in range(steps):
        drawn = draw_step(generator, TIMESTEPS, x0.shape, WINDOW)
        sigmas = model_sampling.sigmas[drawn.timestep].expand(WINDOW)
        for start, grad in ([(0, False)] if drawn.start else []) + [(drawn.start, True)]:
            frames = slice(start, start + WINDOW)
            noisy = model_sampling.noise_scaling(sigmas, drawn.noise[frames], x0[frames])
            expected.append((model_sampling.calculate_input(sigmas, noisy), grad))
    assert [grad for _, grad in seen] == [grad for _, grad in expected]
    assert any(not grad for _, grad in expected), "this seed draws no late window"
    for (got, _), (want, _) in zip(seen, expected, strict=True):
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize(("anchor", "same"), [("clip", True), ("window", False)])
def test_the_clip_anchor_reads_frame_0_as_the_whole_clip_does(anchor, same):
    """First step, a window after frame 0: with the clip anchor its loss is the whole clip's prediction cut to the
    window; the window's own first frame as anchor gives another loss."""
    model, seed = first_frame_model(), seed_with_late_window()
    loss = windowed(model, 1, seed, anchor=anchor).losses[0]
    model_sampling = model.get_model_object("model_sampling")
    x0 = model.model.process_latent_in(clip()["samples"])
    drawn = draw_step(torch.Generator().manual_seed(seed), TIMESTEPS, x0.shape, WINDOW)
    sigma = float(model_sampling.sigmas[drawn.timestep])
    noisy = model_sampling.noise_scaling(torch.full((FRAMES,), sigma), drawn.noise, x0)
    context = text_cond("sd1", 1)[0][0].expand(FRAMES, -1, -1)
    denoised = apply_unet(model, noisy, sigma, context, [0])
    frames = slice(drawn.start, drawn.start + WINDOW)
    whole = float((((denoised[frames] - x0[frames]) / -sigma) ** 2).mean())
    assert (loss == pytest.approx(whole, rel=1e-4)) is same


def test_checkpointing_recomputes_with_the_anchor():
    """Blocks recompute during backward, after the anchor pass: the same losses as keeping every activation."""
    seed = seed_with_late_window(2)
    model = inflate_model(tiny_unet("sd1", seed=0), InflationConfig(), "Inflate UNet")
    kept = windowed(model, 3, seed, scope="off").losses
    recomputed = windowed(model, 3, seed, scope="blocks").losses
    assert recomputed == pytest.approx(kept, rel=1e-5)


def test_a_window_as_long_as_the_clip_is_the_whole_clip():
    model = inflate_model(tiny_unet("sd1", seed=0), InflationConfig(), "Inflate UNet")
    whole = windowed(model, 3, 5, window=0)
    same = windowed(model, 3, 5, window=FRAMES)
    assert same.losses == whole.losses
    assert "window" not in same.weights.info
    assert windowed(model, 1, 5).weights.info["window"] == str(WINDOW)


def test_bad_windows_are_refused_before_any_step():
    with pytest.raises(TAVInputError, match=r"One-Shot Tune.*window.*9 frames, but the clip has 8"):
        windowed(first_frame_model(), 1, 0, window=9)
    message = OneShotTune.validate_inputs(steps=10, learning_rate=1e-4, window=1)
    assert isinstance(message, str) and "window" in message


def test_compiled_layers_tune_windows_with_the_clip_anchor_and_auto_alike(monkeypatch):
    """torch.compile'd layers under auto checkpointing give the eager windowed losses, the clip anchor's no-grad
    pass included, with no graph break (backend aot_eager, as test_one_shot_tune's compile test explains)."""
    from torch._dynamo.utils import counters

    model = inflate_model(tiny_unet("sd1", seed=0), InflationConfig(), "Inflate UNet")
    seed = seed_with_late_window(2)
    eager = windowed(model, 2, seed).losses
    monkeypatch.setattr(torch, "compile", partial(torch.compile, backend="aot_eager"))
    torch._dynamo.reset()
    counters.clear()
    settings = TuneSettings(steps=2, learning_rate=1e-2, seed=seed, gradient_checkpointing="auto", window=WINDOW,
                            window_anchor="clip", compile=True)
    try:
        compiled = tune(model, clip(), text_cond("sd1", 1), settings, TUNE)
        assert counters["stats"]["unique_graphs"] > 0, "nothing was compiled"
        assert not counters["graph_break"], dict(counters["graph_break"])
    finally:
        torch._dynamo.reset()
    assert compiled.weights.info["gradient_checkpointing"] == "auto: off"  # ample memory: as the eager run
    torch.testing.assert_close(torch.tensor(compiled.losses), torch.tensor(eager), atol=1e-5, rtol=1e-5)
