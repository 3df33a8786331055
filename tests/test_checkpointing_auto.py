"""gradient_checkpointing auto: the fastest scope whose forecast peak fits the free memory, and the same tune
whichever it picks."""

import comfy.model_management
import pytest
from comfyui_tune_a_video.comfy_glue import one_shot_tune
from comfyui_tune_a_video.comfy_glue.one_shot_tune import tune
from comfyui_tune_a_video.comfy_glue.unet_inflation import inflate_model
from comfyui_tune_a_video.nodes.one_shot_tune import NODE as TUNE
from comfyui_tune_a_video.tav_core.inflation_config import InflationConfig
from comfyui_tune_a_video.tav_core.memory_forecast import pick_scope
from comfyui_tune_a_video.tav_core.tuning import CheckpointScope, TuneSettings
from tav_dev.tiny_models import text_cond, tiny_unet
from test_window_tuning import clip


def auto_tune(monkeypatch, free_bytes: int, window: int = 0):
    """Three steps with auto under `free_bytes` of free memory; the forecast it saw and the tune."""
    seen = {}

    def recording_pick(peaks, free):
        seen["peaks"], seen["free"] = peaks, free
        return pick_scope(peaks, free)

    monkeypatch.setattr(one_shot_tune, "pick_scope", recording_pick)
    monkeypatch.setattr(comfy.model_management, "get_free_memory", lambda *args, **kwargs: free_bytes)
    model = inflate_model(tiny_unet("sd1", seed=0), InflationConfig(), "Inflate UNet")
    settings = TuneSettings(steps=3, learning_rate=1e-2, seed=2, gradient_checkpointing="auto", window=window)
    return seen, tune(model, clip(), text_cond("sd1", 1), settings, TUNE)


def test_auto_picks_the_fastest_scope_that_fits_and_every_pick_tunes_alike(monkeypatch):
    seen, ample = auto_tune(monkeypatch, 10**15)
    assert seen["free"] == 10**15 and ample.weights.info["gradient_checkpointing"] == "auto: off"
    peaks = seen["peaks"]
    assert peaks[CheckpointScope.OFF] > peaks[CheckpointScope.TRANSFORMERS] > peaks[CheckpointScope.BLOCKS] > 0
    picks = {"off": ample.losses}
    for scope in (CheckpointScope.TRANSFORMERS, CheckpointScope.BLOCKS):
        free = int(peaks[scope] / 0.8) + 1  # the scope's peak fits within the 20 % margin, the faster one's not
        _, tuned = auto_tune(monkeypatch, free)
        assert tuned.weights.info["gradient_checkpointing"] == f"auto: {scope.value}"
        picks[scope.value] = tuned.losses
    _, starved = auto_tune(monkeypatch, 1)  # nothing fits: the least memory
    assert starved.weights.info["gradient_checkpointing"] == "auto: blocks"
    for losses in picks.values():
        assert losses == pytest.approx(picks["off"], rel=1e-5)


def test_the_forecast_follows_the_window(monkeypatch):
    whole, _ = auto_tune(monkeypatch, 10**15)
    windowed, _ = auto_tune(monkeypatch, 10**15, window=3)
    assert windowed["peaks"][CheckpointScope.OFF] < whole["peaks"][CheckpointScope.OFF]
