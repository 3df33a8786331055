"""One-Shot Tune with a temporal rank: the temporal layers' weight matrices (attention projections, pseudo-3D kernels)
learn as comfy.weight_adapter LoRAs over their fresh, seeded initialisation, their vectors whole; the file holds the
LoRAs and no temporal matrix, and every way back (the pack's file, the reference's layout, resuming) rebuilds the
model the tune trained."""

from dataclasses import replace

import pytest
import torch
from comfyui_tune_a_video.comfy_glue.one_shot_tune import tune
from comfyui_tune_a_video.comfy_glue.temporal_training import weight_matrices
from comfyui_tune_a_video.comfy_glue.tuned_weights import load_onto
from comfyui_tune_a_video.comfy_glue.unet_inflation import inflate_model, temporal_layers_of
from comfyui_tune_a_video.nodes.load_reference_unet import LoadReferenceUNet
from comfyui_tune_a_video.nodes.one_shot_tune import NODE as TUNE
from comfyui_tune_a_video.nodes.one_shot_tune import OneShotTune
from comfyui_tune_a_video.nodes.tuned_weights_io import LoadTunedWeights, SaveTunedWeights
from comfyui_tune_a_video.tav_core.errors import TAVInputError
from comfyui_tune_a_video.tav_core.inflation_config import InflationConfig, TemporalConvMode
from comfyui_tune_a_video.tav_core.reference_unet import REFERENCE_INFLATION
from comfyui_tune_a_video.tav_core.tuning import Trainable, TuneSettings
from comfyui_tune_a_video.tav_core.weights_file import load_safetensors
from tav_dev.tiny_models import text_cond, tiny_unet
from tav_dev.unet_harness import seeded_prediction, sliding_square

TEMPORAL_RANK = 2
PSEUDO3D = InflationConfig(temporal_conv=TemporalConvMode.PSEUDO3D)



def inflated(config: InflationConfig = PSEUDO3D):
    return inflate_model(tiny_unet("sd1", seed=0), config, "Inflate UNet")


def run(model, steps: int = 4, temporal_rank: int = TEMPORAL_RANK, **settings):
    settings = TuneSettings(steps=steps, learning_rate=1e-2, seed=3, gradient_checkpointing="off",
                            temporal_rank=temporal_rank, **settings)
    return tune(model, sliding_square(), text_cond("sd1", 1), settings, TUNE)



def test_every_temporal_matrix_learns_a_lora_of_that_rank_and_every_vector_learns_whole():
    model = inflated()
    result = run(model)
    weights, state = result.weights, temporal_layers_of(model).state_dict()
    matrices = weight_matrices(temporal_layers_of(model))
    assert any(key.startswith("convs.") for key in matrices) and any(key.endswith(".to_q.weight") for key in matrices)
    assert set(weights.temporal_lora) == set(matrices)
    assert set(weights.temporal) == set(state) - set(matrices), "a matrix was kept whole, or a vector left out"
    for key, lora in weights.temporal_lora.items():
        assert lora.down.shape[0] == TEMPORAL_RANK == lora.up.shape[1]
        assert (lora.up.shape[0], lora.down.shape[1]) == (matrices[key][0], matrices[key][1:].numel())
        assert (lora.up @ lora.down).abs().max() > 0, f"{key} did not learn"
    assert any(not torch.equal(value, state[key]) for key, value in weights.temporal.items()), "no vector learned"
    assert weights.info["temporal_rank"] == str(TEMPORAL_RANK)
    again = run(inflated())  # the same seed, the same LoRAs
    assert all(torch.equal(again.weights.temporal_lora[key].up, lora.up)
               for key, lora in weights.temporal_lora.items())


def test_the_file_holds_the_loras_and_no_temporal_matrix_and_loads_to_the_same_model(weights_folder):
    model = inflated()
    result = run(model)
    SaveTunedWeights.execute(result.weights, "clip", "fp32")
    tensors, _ = load_safetensors(weights_folder / "clip.safetensors")
    temporal = {key: value for key, value in tensors.items() if key.startswith("tav_temporal.")}
    matrices = weight_matrices(temporal_layers_of(model))
    assert not [key for key in temporal if key.removeprefix("tav_temporal.") in matrices]
    assert len([key for key in temporal if key.endswith(".lora_up.weight")]) == len(result.weights.temporal_lora)
    whole = run(inflated(), temporal_rank=0)
    SaveTunedWeights.execute(whole.weights, "whole", "fp32")
    whole_temporal = [v for k, v in load_safetensors(weights_folder / "whole.safetensors")[0].items()
                      if k.startswith("tav_temporal.")]
    assert sum(v.numel() for v in temporal.values()) < sum(v.numel() for v in whole_temporal) / 2

    loaded_model, loaded = LoadTunedWeights.execute(tiny_unet("sd1", seed=0), "clip.safetensors", False).result
    assert set(loaded.temporal_lora) == set(result.weights.temporal_lora)
    tuned_prediction = seeded_prediction(result.model)
    torch.testing.assert_close(seeded_prediction(loaded_model), tuned_prediction, rtol=0, atol=1e-5)
    assert (tuned_prediction - seeded_prediction(inflated())).abs().max() > 1e-3, "the tune changed nothing"


def test_the_training_forward_with_loras_predicts_as_the_merged_model():
    """A tune resumed from the LoRAs (its adapters set from the file) and a tune of the merged model (whole, starting
    at its weights) see the same first draw: the same loss means the LoRAs as trained compute the merged weights."""
    model = inflated()
    first = run(model, steps=3)
    from_start = replace(first.weights, info={**first.weights.info, "steps": "0"})  # the resume replays draw 0
    resumed = tune(model, sliding_square(), text_cond("sd1", 1),
                   TuneSettings(steps=1, learning_rate=1e-2, seed=3, gradient_checkpointing="off",
                                temporal_rank=TEMPORAL_RANK), TUNE, resume=from_start)
    merged = run(first.model, steps=1, temporal_rank=0)
    assert resumed.losses[0] == pytest.approx(merged.losses[0], rel=1e-5)
    untuned = run(inflated(), steps=1, temporal_rank=0)
    assert abs(untuned.losses[0] - merged.losses[0]) > 1e-4 * merged.losses[0], "the check cannot fail"


def test_the_reference_layout_holds_the_merged_temporal_layers(weights_folder):
    model = inflate_model(tiny_unet("sd1", seed=0), REFERENCE_INFLATION, "Inflate UNet")
    result = run(model, steps=3, trainable=Trainable.REFERENCE)
    SaveTunedWeights.execute(result.weights, "skier", "fp32", "reference", result.model)
    loaded = LoadReferenceUNet.execute(tiny_unet("sd1", seed=0),
                                       "skier/unet/diffusion_pytorch_model.safetensors").result[0]
    torch.testing.assert_close(seeded_prediction(loaded), seeded_prediction(result.model), rtol=0, atol=0)


def test_a_file_whose_temporal_lora_leaves_a_vector_out_is_refused_naming_it():
    weights = run(inflated(), steps=1).weights
    missing = sorted(weights.temporal)[0]
    damaged = replace(weights, temporal={k: v for k, v in weights.temporal.items() if k != missing})
    with pytest.raises(TAVInputError, match=rf"TAV Load Tuned Weights: input 'weights_name': clip: .*no {missing}"):
        load_onto(tiny_unet("sd1", seed=0), damaged, False, "TAV Load Tuned Weights", "clip")
    wrong_shape = replace(weights, temporal_lora={
        key: replace(lora, down=lora.down[:, :-1]) for key, lora in weights.temporal_lora.items()
    })
    with pytest.raises(TAVInputError, match=r"the LoRA makes"):
        load_onto(tiny_unet("sd1", seed=0), wrong_shape, False, "TAV Load Tuned Weights", "clip")


@pytest.mark.parametrize(
    ("model", "temporal_rank", "message"),
    [
        (inflated, 1000, r"1000 is above the smallest temporal weight's dimension \(\d+\)"),
        (lambda: inflated(InflationConfig(temporal_layers=False)), 2, "2, but this MODEL adds no temporal layers"),
        (lambda: run(inflated(), steps=1, temporal_rank=0).model, 2,
         "2, but this MODEL.s temporal layers were already tuned"),
        (inflated, -1, "-1: the rank is 0"),
    ],
    ids=["above the smallest matrix", "no temporal layers", "already tuned layers", "negative"],
)
def test_a_temporal_rank_that_cannot_work_is_refused_before_tuning(model, temporal_rank, message):
    with pytest.raises(TAVInputError, match=rf"One-Shot Tune: input 'temporal_rank': {message}"):
        run(model(), steps=10**6, temporal_rank=temporal_rank)  # refused at once, or this test would never end
    assert "temporal_rank" in OneShotTune.validate_inputs(steps=10, learning_rate=1e-4, temporal_rank=5000)
