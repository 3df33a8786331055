"""One-Shot Tune with a rank: comfy.weight_adapter LoRAs on every to_q instead of full-rank deltas; saved in the
pack's file or as a standard ComfyUI LoRA that the stock LoraLoaderModelOnly turns back into the same tuned model."""

from types import SimpleNamespace

import pytest
import torch
from comfyui_tune_a_video.comfy_glue.model_folders import COMFY_LORA_FOLDER
from comfyui_tune_a_video.comfy_glue.one_shot_tune import tune
from comfyui_tune_a_video.comfy_glue.train_adapters import seeded_lora
from comfyui_tune_a_video.comfy_glue.tuned_weights import tuned_q_shapes
from comfyui_tune_a_video.comfy_glue.unet_inflation import inflate_model
from comfyui_tune_a_video.nodes.one_shot_tune import NODE as TUNE
from comfyui_tune_a_video.nodes.one_shot_tune import OneShotTune
from comfyui_tune_a_video.nodes.tuned_weights_io import LoadTunedWeights, SaveTunedWeights
from comfyui_tune_a_video.nodes.weights_in_prompt import refuse_save_and_load_together
from comfyui_tune_a_video.tav_core.errors import TAVInputError
from comfyui_tune_a_video.tav_core.inflation_config import InflationConfig
from comfyui_tune_a_video.tav_core.tuned_weights_file import without_spatial_part
from comfyui_tune_a_video.tav_core.tuning import TuneSettings
from comfyui_tune_a_video.tav_core.weights_file import load_safetensors
from tav_dev.tiny_models import text_cond, tiny_unet
from tav_dev.unet_harness import seeded_prediction, sliding_square

import nodes as comfy_nodes

RANK = 4



def tuned(rank: int, steps: int = 4, seed: int = 0):
    base = tiny_unet("sd1", seed=0)
    model = inflate_model(base, InflationConfig(), "Inflate UNet")
    settings = TuneSettings(steps=steps, learning_rate=1e-2, seed=seed, rank=rank)
    return base, model, tune(model, sliding_square(), text_cond("sd1", 1), settings, TUNE)



def test_a_fresh_lora_changes_nothing():
    weight = torch.randn(32, 48)
    adapter = seeded_lora(weight, RANK, torch.Generator().manual_seed(0), torch.device("cpu"))
    assert adapter.lora_up.weight.abs().max() > 0  # up drawn, down zero: the product is exactly zero
    assert torch.equal(adapter(weight), weight)


def test_rank_r_trains_a_lora_of_that_rank_on_every_to_q_and_no_full_delta():
    _, model, result = tuned(RANK)
    weights = result.weights
    assert weights.q_deltas == {}
    assert set(weights.q_lora) == set(tuned_q_shapes(model))
    for key, lora in weights.q_lora.items():
        assert lora.down.shape[0] == RANK and lora.up.shape[1] == RANK
        assert (lora.up.shape[0], lora.down.shape[1]) == tuple(tuned_q_shapes(model)[key])
        assert (lora.up @ lora.down).abs().max() > 0, f"{key} did not learn"
    assert weights.info["rank"] == str(RANK)
    _, _, again = tuned(RANK)  # the same seed, the same LoRAs
    assert all(torch.equal(again.weights.q_lora[key].up, lora.up) for key, lora in weights.q_lora.items())


def test_the_pack_file_of_a_rank_tune_holds_the_loras_and_loads_to_the_same_model(weights_folder):
    base, _, result = tuned(RANK)
    SaveTunedWeights.execute(result.weights, "clip", "fp32")
    tensors, _ = load_safetensors(weights_folder / "clip.safetensors")
    assert not [key for key in tensors if key.endswith(".diff")]
    assert len([key for key in tensors if key.endswith(".to_q.lora_up.weight")]) == len(result.weights.q_lora)
    loaded_model, loaded = LoadTunedWeights.execute(base, "clip.safetensors", False).result
    assert set(loaded.q_lora) == set(result.weights.q_lora)
    torch.testing.assert_close(seeded_prediction(loaded_model), seeded_prediction(result.model), rtol=0, atol=1e-5)


@pytest.mark.parametrize("rank", [RANK, 0], ids=["rank 4", "full rank"])
def test_the_comfy_lora_through_the_stock_loader_rebuilds_the_tuned_model(weights_folder, lora_folder, rank):
    base, model, result = tuned(rank)
    SaveTunedWeights.execute(result.weights, "clip", "fp32", as_comfy_lora=True)
    lora, _ = load_safetensors(lora_folder / "clip.safetensors")
    stems = {key.removesuffix(".weight").removesuffix(".to_q") for key in tuned_q_shapes(model)}
    if rank:
        expected = {f"{stem}.to_q.{part}" for stem in stems for part in ("lora_up.weight", "lora_down.weight", "alpha")}
    else:
        expected = {f"{stem}.to_q.diff" for stem in stems}
    assert set(lora) == expected
    rest, metadata = load_safetensors(weights_folder / "clip.safetensors")
    assert not [key for key in rest if key.startswith("diffusion_model.")], "the to_q part is in the LoRA alone"
    assert metadata["spatial_lora"] == "clip.safetensors"

    (with_lora,) = comfy_nodes.LoraLoaderModelOnly().load_lora_model_only(base, "clip.safetensors", 1.0)
    assert set(tuned_q_shapes(model)) <= set(with_lora.patches), "the stock loader left a to_q key unmatched"
    rebuilt, _ = LoadTunedWeights.execute(with_lora, "clip.safetensors", False).result
    torch.testing.assert_close(seeded_prediction(rebuilt), seeded_prediction(result.model), rtol=0, atol=1e-5)


def test_the_temporal_part_alone_is_refused_on_a_model_without_its_lora(weights_folder, lora_folder):
    base, _, result = tuned(RANK, steps=1)
    SaveTunedWeights.execute(result.weights, "clip", "fp16", as_comfy_lora=True)
    with pytest.raises(TAVInputError, match=r"TAV Load Tuned Weights: input 'model': .*only the temporal part.*"
                       r"loras/clip.safetensors.*LoraLoaderModelOnly"):
        LoadTunedWeights.execute(base, "clip.safetensors", False)


def test_a_rank_above_the_smallest_to_q_is_refused_before_tuning():
    model = inflate_model(tiny_unet("sd1", seed=0), InflationConfig(), "Inflate UNet")
    smallest = min(min(shape) for shape in tuned_q_shapes(model).values())
    settings = TuneSettings(steps=10**6, rank=smallest + 1)  # refused at once, or this test would never end
    with pytest.raises(TAVInputError, match=rf"One-Shot Tune: input 'rank': {smallest + 1} is above .* {smallest}"):
        tune(model, sliding_square(), text_cond("sd1", 1), settings, TUNE)
    assert "rank" in OneShotTune.validate_inputs(steps=10, learning_rate=1e-4, rank=2000)


def test_as_comfy_lora_is_refused_with_another_format_before_any_write(lora_folder):
    message = SaveTunedWeights.validate_inputs(save_name="clip", format="animatediff_motion_lora", as_comfy_lora=True)
    assert "input 'as_comfy_lora'" in message and "format pack" in message
    assert list(lora_folder.iterdir()) == []


def test_a_prompt_that_saves_the_lora_and_loads_it_is_refused(weights_folder, lora_folder):
    prompt = {
        "1": {"class_type": "TAV_SaveTunedWeights", "inputs": {"save_name": "clip", "as_comfy_lora": True}},
        "2": {"class_type": "LoraLoaderModelOnly", "inputs": {"lora_name": "clip.safetensors"}},
    }
    with pytest.raises(TAVInputError, match=r"also loads clip.safetensors \(node 2 \(LoraLoaderModelOnly\)\)"):
        refuse_save_and_load_together(
            SimpleNamespace(prompt=prompt), "TAV Save Tuned Weights", "save_name", "clip", saving=True,
            folder=COMFY_LORA_FOLDER,
        )


def test_the_temporal_part_alone_is_refused_as_a_reference_unet(weights_folder):
    _, model, result = tuned(RANK, steps=1)
    temporal_only = without_spatial_part(result.weights, "clip.safetensors")
    with pytest.raises(TAVInputError, match=r"TAV Save Tuned Weights: input 'tuned_weights': .*only the temporal part"):
        SaveTunedWeights.execute(temporal_only, "clip", "fp16", "reference", model)
    assert list(weights_folder.iterdir()) == []
