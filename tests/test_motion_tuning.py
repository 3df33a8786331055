"""One-Shot Tune from an AnimateDiff motion module: a motion LoRA (ComfyUI's train adapters), full or frozen,
and the tuned weights both ways (the pack's file, AnimateDiff's motion-LoRA file)."""

import dataclasses
import logging

import pytest
import torch
from comfyui_tune_a_video.comfy_glue.motion_injection import motion_patcher_of
from comfyui_tune_a_video.comfy_glue.tuned_weights import apply_tuned_weights
from comfyui_tune_a_video.nodes.inflate_unet import InflateUNet
from comfyui_tune_a_video.nodes.load_motion_module import LoadMotionModule
from comfyui_tune_a_video.nodes.one_shot_tune import OneShotTune
from comfyui_tune_a_video.nodes.tuned_weights_io import LoadTunedWeights, SaveTunedWeights
from comfyui_tune_a_video.tav_core.errors import TAVInputError
from comfyui_tune_a_video.tav_core.motion_module_file import read_motion_lora
from comfyui_tune_a_video.tav_core.weights_file import load_safetensors, save_atomically
from tav_dev.motion_module_files import seeded_motion_module
from tav_dev.unet_harness import apply_unet, load_for_inference

FRAMES, SIZE, SIGMA, RANK = 4, 8, 2.0, 4
TEXT_WIDTH = 64  # sd15_mini's


@pytest.fixture
def modules(motion_folders, sd15_mini):
    """v3- and v2-shaped modules for sd15_mini in the motion folder."""
    for version in ("v3", "v2"):
        state = seeded_motion_module(sd15_mini.model.diffusion_model, version, seed=1)
        save_atomically(motion_folders.modules / f"mm_{version}.safetensors", state, {})
    return motion_folders


def load(name: str, lora: str = "none"):
    return LoadMotionModule.execute(name, lora, 1.0).result[0]


def inflate(base, motion):
    return InflateUNet.execute(base, "sparse_causal", True, "none", "per_frame", motion_module=motion).result[0]


def conditioning() -> list:
    return [[torch.randn(1, 7, TEXT_WIDTH, generator=torch.Generator().manual_seed(0)), {}]]


def moving_square() -> dict:
    samples = torch.full((FRAMES, 4, SIZE, SIZE), -0.5)
    for f in range(FRAMES):
        samples[f, :, 2:5, 1 + f: 4 + f] = 1.0
    return {"samples": samples}


def tune(model, training: str = "lora", steps: int = 4, checkpointing: str = "blocks", save_name: str = ""):
    return OneShotTune.execute(
        model, moving_square(), conditioning(), steps, 1e-3, 0, checkpointing, "fp32", save_name=save_name,
        caption="a square", motion_training=training, motion_rank=RANK,
    ).result


def predict(model) -> torch.Tensor:
    context = conditioning()[0][0].expand(FRAMES, -1, -1)
    return apply_unet(model, moving_square()["samples"], SIGMA, context, [0])


def test_a_motion_lora_learns_from_identity_and_leaves_the_module_untouched(modules, sd15_mini):
    motion = load("mm_v3.safetensors")
    before = {key: value.clone() for key, value in motion.patcher.model.state_dict().items()}
    model = inflate(sd15_mini, motion)
    untuned = predict(model)
    tuned, weights, _ = tune(model)
    ends = ("to_q.weight", "to_k.weight", "to_v.weight", "to_out.0.weight")
    projections = [key for key in before if key.endswith(ends)]
    assert sorted(weights.motion_lora) == sorted(projections)
    lora = weights.motion_lora[projections[0]]
    assert lora.down.shape[0] == RANK and lora.up.shape[1] == RANK
    assert all(lora.down.abs().max() > 0 for lora in weights.motion_lora.values())  # gradients reached every one
    assert not weights.motion_deltas
    assert weights.motion.version == "v3" and weights.info["motion_training"] == "lora"
    assert (predict(tuned) - untuned).abs().max() > 1e-4
    torch.testing.assert_close(predict(model), untuned, rtol=0, atol=0)  # the input model predicts as before
    load_for_inference(model)
    for key, value in motion.patcher.model.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_the_same_seed_tunes_the_same_motion_lora_with_or_without_checkpointing(modules, sd15_mini):
    """The modules after ResBlocks see no sampling options: recomputation must restore the video layout; the
    LoRA's random start comes from the seed."""
    model = inflate(sd15_mini, load("mm_v2.safetensors"))
    runs = [tune(model, checkpointing=scope)[1] for scope in ("blocks", "off", "off")]
    for run in runs[1:]:
        assert run.info["final_loss"] == runs[0].info["final_loss"]
        for key, lora in runs[0].motion_lora.items():
            torch.testing.assert_close(run.motion_lora[key].up, lora.up, rtol=1e-5, atol=1e-6)


def test_full_and_frozen_motion_training(modules, sd15_mini):
    motion = load("mm_v3.safetensors")
    model = inflate(sd15_mini, motion)
    _, full, _ = tune(model, "full", steps=2)
    parameters = dict(motion.patcher.model.named_parameters())
    assert sorted(full.motion_deltas) == sorted(parameters) and not full.motion_lora
    assert all(full.motion_deltas[key].shape == value.shape for key, value in parameters.items())
    assert sum(float(delta.abs().sum()) for delta in full.motion_deltas.values()) > 0
    frozen_model, frozen, _ = tune(model, "frozen", steps=2)
    assert not frozen.motion_lora and not frozen.motion_deltas and frozen.q_deltas
    assert not motion_patcher_of(frozen_model).patches


def test_the_motion_lora_round_trips_through_animatediffs_file_layout(modules, sd15_mini):
    motion = load("mm_v3.safetensors")
    model = inflate(sd15_mini, motion)
    tuned, weights, _ = tune(model)
    SaveTunedWeights.execute(weights, "square_motion", "fp32", format="animatediff_motion_lora")
    path = modules.loras / "square_motion.safetensors"
    tensors, metadata = load_safetensors(path)
    assert all(".processor." in key and key.endswith(("_lora.down.weight", "_lora.up.weight")) for key in tensors)
    assert metadata["motion_version"] == "v3" and metadata["rank"] == str(RANK)
    assert read_motion_lora(tensors).keys() == weights.motion_lora.keys()
    # The file, loaded as a motion LoRA on the same module, gives the tuned model's prediction (with its to_q deltas).
    with_lora = inflate(sd15_mini, load("mm_v3.safetensors", "square_motion.safetensors"))
    rebuilt = apply_tuned_weights(with_lora, dataclasses.replace(weights, motion_lora={}, motion=None))
    torch.testing.assert_close(predict(rebuilt), predict(tuned), rtol=1e-5, atol=1e-5)


def test_the_tuned_weights_file_records_the_motion_module(modules, sd15_mini, weights_folder, caplog):
    motion = load("mm_v3.safetensors")
    tuned, weights, _ = tune(inflate(sd15_mini, motion))
    SaveTunedWeights.execute(weights, "square", "fp32")
    expected = predict(tuned)
    same = load("mm_v3.safetensors")
    loaded, _ = LoadTunedWeights.execute(sd15_mini, "square.safetensors", False, motion_module=same)
    torch.testing.assert_close(predict(loaded), expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(TAVInputError, match="input 'motion_module'.*tuned with the motion module mm_v3.*has none"):
        LoadTunedWeights.execute(sd15_mini, "square.safetensors", False)
    other = load("mm_v2.safetensors")
    with pytest.raises(TAVInputError, match="input 'motion_module'.*tuned with the motion module mm_v3.*carries mm_v2"):
        LoadTunedWeights.execute(sd15_mini, "square.safetensors", False, motion_module=other)
    with pytest.raises(TAVInputError, match="input 'motion_module'.*already inflated"):
        LoadTunedWeights.execute(inflate(sd15_mini, motion), "square.safetensors", False, motion_module=motion)


def test_saving_a_motion_lora_without_one_is_refused(modules, sd15_mini):
    _, weights, _ = tune(inflate(sd15_mini, load("mm_v3.safetensors")), "frozen", steps=1)
    with pytest.raises(TAVInputError, match="TAV Save Tuned Weights: input 'tuned_weights'.*no motion LoRA"):
        SaveTunedWeights.execute(weights, "nothing", "fp16", format="animatediff_motion_lora")
    assert not list(modules.loras.iterdir())


def test_a_mismatched_motion_module_is_applied_when_allowed(modules, sd15_mini, weights_folder, caplog):
    tune(inflate(sd15_mini, load("mm_v3.safetensors")), "frozen", steps=1, save_name="frozen")
    with caplog.at_level(logging.WARNING):
        other = load("mm_v2.safetensors")
        loaded, _ = LoadTunedWeights.execute(sd15_mini, "frozen.safetensors", True, motion_module=other)
    assert "Applying them anyway" in caplog.text
    assert motion_patcher_of(loaded) is not None


def test_a_prompt_that_saves_and_loads_one_motion_lora_is_refused(modules):
    from types import SimpleNamespace

    from comfyui_tune_a_video.comfy_glue.model_folders import MOTION_LORA_FOLDER
    from comfyui_tune_a_video.nodes.weights_in_prompt import refuse_save_and_load_together

    prompt = {
        "5": {"class_type": "TAV_SaveTunedWeights", "inputs": {
            "tuned_weights": ["4", 1], "save_name": "walk", "precision": "fp16", "format": "animatediff_motion_lora"}},
        "6": {"class_type": "TAV_LoadMotionModule", "inputs": {
            "motion_module": "mm_v3.safetensors", "motion_lora": "walk.safetensors", "lora_strength": 1.0}},
    }
    hidden = SimpleNamespace(prompt=prompt)
    loading = (hidden, "TAV Load Motion Module", "motion_lora", "walk.safetensors")
    with pytest.raises(TAVInputError, match=r"input 'motion_lora': this prompt also saves walk.safetensors \(node 5"):
        refuse_save_and_load_together(*loading, saving=False, folder=MOTION_LORA_FOLDER)
    with pytest.raises(TAVInputError, match=r"input 'save_name': this prompt also loads walk.safetensors \(node 6"):
        refuse_save_and_load_together(
            hidden, "TAV Save Tuned Weights", "save_name", "walk", saving=True, folder=MOTION_LORA_FOLDER)
    prompt["5"]["inputs"]["format"] = "pack"  # the same name in the pack's format lands in models/tuneavideo/
    refuse_save_and_load_together(*loading, saving=False, folder=MOTION_LORA_FOLDER)
