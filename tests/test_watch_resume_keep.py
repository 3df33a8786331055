"""Tuning you can watch, keep and continue: preview_every shows the denoised training batch, save_every writes
complete files while tuning (a Cancel keeps the last one), resume_from continues a tune where it stopped, and
resuming another setup's weights is refused before any step."""

import comfy.model_management
import comfy.utils
import pytest
import torch
from comfyui_tune_a_video.comfy_glue.one_shot_tune import tune
from comfyui_tune_a_video.comfy_glue.unet_inflation import inflate_model
from comfyui_tune_a_video.nodes.one_shot_tune import NODE as TUNE
from comfyui_tune_a_video.nodes.one_shot_tune import OneShotTune
from comfyui_tune_a_video.nodes.tuned_weights_io import LoadTunedWeights
from comfyui_tune_a_video.tav_core.errors import TAVInputError
from comfyui_tune_a_video.tav_core.inflation_config import AttentionMode, InflationConfig
from comfyui_tune_a_video.tav_core.tuning import TuneSettings
from comfyui_tune_a_video.tav_core.weights_file import load_safetensors
from tav_dev.tiny_models import text_cond, tiny_unet
from tav_dev.unet_harness import progress_hook, seeded_prediction, sliding_square

SIZE = 8  # sliding_square's latent width



def inflated(config: InflationConfig | None = None, seed: int = 0):
    return inflate_model(tiny_unet("sd1", seed=seed), config or InflationConfig(), "Inflate UNet")


def run(model, steps: int, rank: int = 0, temporal_rank: int = 0, window: int = 0, fresh_noise_share: float = 0.0,
        **kwargs):
    settings = TuneSettings(steps=steps, learning_rate=1e-2, seed=7, gradient_checkpointing="off", rank=rank,
                            temporal_rank=temporal_rank, window=window, fresh_noise_share=fresh_noise_share)
    return tune(model, sliding_square(), text_cond("sd1", 1), settings, TUNE, **kwargs)



@pytest.mark.parametrize(("rank", "temporal_rank", "fresh_noise_share"), [(0, 0, 0.0), (4, 0, 0.0), (4, 2, 0.0),
                                                                        (0, 0, 0.5)],
                         ids=["full rank", "rank 4", "rank 4, temporal rank 2", "fresh-noise steps"])
def test_a_resumed_tune_starts_from_the_loaded_weights_and_its_loss_goes_on(rank, temporal_rank, fresh_noise_share):
    """Tuning 3 steps and resuming 3 more sees step 4 exactly as a 6-step tune does: the same parameters (the
    loaded ones) and the same draw, so the same loss; the optimiser's moments restart, so later steps differ."""
    model = inflated()
    whole = run(model, 6, rank, temporal_rank, fresh_noise_share=fresh_noise_share)
    first = run(model, 3, rank, temporal_rank, fresh_noise_share=fresh_noise_share)
    resumed = run(model, 3, rank, temporal_rank, fresh_noise_share=fresh_noise_share, resume=first.weights)
    assert resumed.losses[0] == pytest.approx(whole.losses[3], rel=1e-5, abs=1e-7)
    assert resumed.weights.info["steps"] == "6" and resumed.weights.info["resumed_at_step"] == "3"
    # Before its first step the resumed tune's model is the loaded one: one step at a vanishing rate predicts as it.
    settings = TuneSettings(steps=1, learning_rate=1e-12, seed=7, gradient_checkpointing="off", rank=rank,
                            temporal_rank=temporal_rank, fresh_noise_share=fresh_noise_share)
    barely = tune(model, sliding_square(), text_cond("sd1", 1), settings, TUNE, resume=first.weights)
    loaded = seeded_prediction(first.model)
    torch.testing.assert_close(seeded_prediction(barely.model), loaded, rtol=0, atol=1e-5)
    assert (loaded - seeded_prediction(model)).abs().max() > 1e-3, "the loaded weights are the untuned model's"


def test_save_every_writes_complete_files_and_a_cancel_keeps_the_last(weights_folder):
    seen, saved_steps = [], []
    path = weights_folder / "long.safetensors"

    def hook(value, total, preview, node_id=None):
        seen.append(value)
        if path.exists():
            saved_steps.append(load_safetensors(path)[1]["info.steps"])
        if value == 5:
            comfy.model_management.interrupt_current_processing(True)

    with progress_hook(hook), pytest.raises(comfy.model_management.InterruptProcessingException):
        OneShotTune.execute(
            inflated(), sliding_square(), text_cond("sd1", 1), 50, 1e-3, 0, "off", "auto", save_name="long",
            save_every=2,
        )
    assert seen == [1, 2, 3, 4, 5]
    assert saved_steps[-1] == "4" and "2" in saved_steps  # rewritten every 2 steps, the steps recorded
    assert sorted(p.name for p in weights_folder.iterdir()) == ["long.safetensors"]  # no partial file beside it
    model, weights = LoadTunedWeights.execute(tiny_unet("sd1", seed=0), "long.safetensors", False).result
    assert weights.info["steps"] == "4"
    resumed = OneShotTune.execute(
        inflated(), sliding_square(), text_cond("sd1", 1), 2, 1e-3, 0, "off", "auto", resume_from=weights
    ).result[1]
    assert resumed.info["steps"] == "6"


def test_save_every_without_a_save_name_is_refused_before_tuning():
    with pytest.raises(TAVInputError, match=r"One-Shot Tune: input 'save_every': 5, but save_name is empty"):
        OneShotTune.execute(inflated(), sliding_square(), text_cond("sd1", 1), 100000, 1e-3, 0, "off", "auto",
                            save_every=5)


@pytest.mark.parametrize(
    ("model", "settings", "input_name", "message"),
    [
        (lambda: inflated(seed=1), {}, "resume_from", "tuned on another base"),
        (lambda: inflated(InflationConfig(attention=AttentionMode.FULL)), {}, "resume_from",
         "tuned with attention=sparse_causal.*inflated with attention=full"),
        (inflated, {"rank": 4}, "rank", "4, but the weights in resume_from were tuned with rank 0"),
        (inflated, {"temporal_rank": 2}, "temporal_rank",
         "2, but the weights in resume_from were tuned with temporal_rank 0"),
        (inflated, {"window": 2}, "window", "2, but the weights in resume_from were tuned with the whole clip"),
        (inflated, {"window": 3, "window_anchor": "clip"}, "window_anchor",
         "clip, but the weights in resume_from were tuned with window_anchor window"),
        (inflated, {"fresh_noise_share": 0.5}, "fresh_noise_share",
         "0.5, but the weights in resume_from were tuned with fresh_noise_share 0.0"),
    ],
    ids=["another base", "another inflation", "another rank", "another temporal rank", "another window",
         "another window anchor", "another fresh-noise share"],
)
def test_resuming_another_setups_weights_is_refused_before_any_step(model, settings, input_name, message):
    earlier = run(inflated(), 1, window=3 if "window_anchor" in settings else 0).weights
    tuning = TuneSettings(steps=10**6, **settings)  # refused at once, or this test would never end
    with pytest.raises(TAVInputError, match=rf"One-Shot Tune: input '{input_name}': .*{message}"):
        tune(model(), sliding_square(), text_cond("sd1", 1), tuning, TUNE, resume=earlier)


def test_resuming_on_a_clip_of_another_length_is_refused():
    earlier = run(inflated(), 1).weights
    longer = {"samples": torch.cat([sliding_square()["samples"]] * 2)}
    with pytest.raises(TAVInputError, match=r"input 'resume_from': these weights were tuned on a clip of 4 frames, "
                       r"these latents hold 8"):
        tune(inflated(), longer, text_cond("sd1", 1), TuneSettings(steps=10**6), TUNE, resume=earlier)


def test_resuming_onto_the_already_tuned_model_is_refused():
    earlier = run(inflated(), 2)
    with pytest.raises(TAVInputError, match=r"input 'resume_from': this MODEL already carries these weights"):
        tune(earlier.model, sliding_square(), text_cond("sd1", 1), TuneSettings(steps=10**6), TUNE,
             resume=earlier.weights)


def test_preview_every_shows_the_denoised_first_and_last_frames_every_n_steps():
    previews = {}

    def hook(value, total, preview, node_id=None):
        previews[value] = preview

    with progress_hook(hook):
        OneShotTune.execute(inflated(), sliding_square(), text_cond("sd1", 1), 6, 1e-3, 0, "off", "auto",
                            preview_every=3)
    assert sorted(step for step, preview in previews.items() if preview is not None) == [3, 6]
    image_format, image, _ = previews[3]
    assert image_format == "JPEG" and image.size == (2 * SIZE, SIZE)  # first | last frame, one pixel per latent
    assert previews[3][1].tobytes() != previews[6][1].tobytes()  # each step's own prediction
