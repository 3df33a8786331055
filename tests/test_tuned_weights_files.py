"""Tuned-weights files: each bad file is refused naming the node, the file and what is wrong; names are checked
before any work; a changed file is loaded again."""

import json
import os
import time

import pytest
import torch
from comfyui_tune_a_video.comfy_glue.unet_inflation import temporal_layers_of
from comfyui_tune_a_video.nodes.one_shot_tune import OneShotTune
from comfyui_tune_a_video.nodes.tuned_weights_io import LoadTunedWeights, SaveTunedWeights
from comfyui_tune_a_video.tav_core.errors import TAVInputError
from comfyui_tune_a_video.tav_core.tuned_weights_file import to_file_contents
from safetensors.torch import save_file
from tav_dev.tiny_models import tiny_unet
from tav_dev.unet_harness import seeded_tuned_weights, write_tuned_weights

NAME = "bad.safetensors"
LOAD_ERROR = rf"TAV Load Tuned Weights: input 'weights_name': {NAME} \(.*\): "


def good_file_contents(seed: int = 1) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    return to_file_contents(seeded_tuned_weights(tiny_unet("sd1", seed=0), seed), torch.float16)


def write_contents(path, tensors: dict, metadata: dict) -> None:
    save_file({key: value.contiguous() for key, value in tensors.items()}, str(path), metadata=metadata)


def load(name: str = NAME, base=None):
    return LoadTunedWeights.execute(base or tiny_unet("sd1", seed=0), name, False).result


def first_key(tensors: dict, marker: str) -> str:
    return next(key for key in sorted(tensors) if marker in key)


def test_a_good_file_loads_and_round_trips(weights_folder):
    weights = seeded_tuned_weights(tiny_unet("sd1", seed=0), seed=1)
    write_tuned_weights(weights_folder / NAME, weights, torch.float32)
    _, loaded = load()
    assert loaded.inflation == weights.inflation and loaded.fingerprint == weights.fingerprint
    for key, delta in weights.q_deltas.items():
        assert torch.equal(loaded.q_deltas[key], delta)
    assert set(loaded.temporal) == set(weights.temporal)


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"", r"not a readable safetensors file \(0 bytes; .*header too small"),
        (os.urandom(4096), r"not a readable safetensors file \(4096 bytes; .*header"),
        ((10**12).to_bytes(8, "little") + b"{}", r"not a readable safetensors file .*header too large"),
        ("truncated", r"not a readable safetensors file .*incomplete"),
    ],
    ids=["empty", "random bytes", "huge header", "truncated"],
)
def test_unreadable_files_are_named_with_what_is_wrong(weights_folder, content, problem):
    if content == "truncated":
        write_contents(weights_folder / "whole.safetensors", *good_file_contents())
        content = (weights_folder / "whole.safetensors").read_bytes()[:-100]
    (weights_folder / NAME).write_bytes(content)
    with pytest.raises(TAVInputError, match=LOAD_ERROR + problem):
        load()


def without(mapping: dict, key: str) -> dict:
    return {k: v for k, v in mapping.items() if k != key}


def test_malformed_contents_are_named_with_what_is_wrong(weights_folder):
    tensors, metadata = good_file_contents()
    delta = first_key(tensors, ".diff")
    temporal = first_key(tensors, "tav_temporal.")
    cases = [
        (tensors, without(metadata, "inflation"), "its metadata lacks inflation"),
        (tensors, without(metadata, "format"), "not a Tune-A-Video tuned-weights file .*format None"),
        (tensors, {**metadata, "inflation": "{"}, "its recorded inflation settings are unreadable"),
        (tensors, {**metadata, "inflation": json.dumps({"attention": "full"})},
         r"its recorded inflation settings are unreadable \(.*missing \['groupnorm'"),
        (tensors, {**metadata, "inflation": json.dumps({**json.loads(metadata["inflation"]), "attention": "diagonal"})},
         "its recorded inflation settings are unreadable .*'diagonal' is not a valid AttentionMode"),
        ({**tensors, "other.weight": torch.zeros(2)}, metadata, "it holds tensors this format does not have, e.g. 'o"),
        ({**tensors, delta: torch.full_like(tensors[delta], float("nan"))}, metadata, "1 tensor holds NaN or infinite"),
        ({**tensors, temporal: torch.full_like(tensors[temporal], float("inf"))}, metadata, "1 tensor holds NaN or"),
    ]
    for case_tensors, case_metadata, problem in cases:
        write_contents(weights_folder / NAME, case_tensors, case_metadata)
        with pytest.raises(TAVInputError, match=LOAD_ERROR + problem):
            load()


def test_tensors_that_do_not_fit_the_model_are_named(weights_folder):
    """A wrongly shaped delta used to load "successfully" and be left out silently (WEIGHT NOT MERGED)."""
    tensors, metadata = good_file_contents()
    delta, temporal = first_key(tensors, ".diff"), first_key(tensors, "tav_temporal.")
    wrong_delta = {**tensors, delta: torch.zeros(3, 3, dtype=torch.float16)}
    write_contents(weights_folder / NAME, wrong_delta, metadata)
    shape = tuple(tensors[delta].shape)
    weight_key = delta.removesuffix(".diff") + ".weight"
    with pytest.raises(TAVInputError, match=rf"do not fit this model .*{weight_key} is \(3, 3\), the model's is "
                                            rf"\({shape[0]}, {shape[1]}\)"):
        load()
    renamed = {**without(tensors, temporal), temporal + "_renamed": tensors[temporal]}
    write_contents(weights_folder / NAME, renamed, metadata)
    with pytest.raises(TAVInputError, match=r"do not fit this model \(2 problems: no layers\..*; unexpected layers"):
        load()


def test_architecture_mismatch_names_both_architectures(weights_folder):
    write_tuned_weights(weights_folder / NAME, seeded_tuned_weights(tiny_unet("sd2", seed=0), seed=1))
    mismatch = (r"TAV Load Tuned Weights: input 'model': bad\.safetensors \(.*\) was tuned on a different kind of "
                r"UNet: SD20 UNet \(.*\); this MODEL is a SD15 UNet")
    with pytest.raises(TAVInputError, match=mismatch):
        load()


def test_a_link_out_of_the_folder_is_refused_saying_so(weights_folder, tmp_path):
    outside = tmp_path / "elsewhere.safetensors"
    write_tuned_weights(outside, seeded_tuned_weights(tiny_unet("sd1", seed=0), seed=1))
    (weights_folder / NAME).symlink_to(outside)
    assert NAME in LoadTunedWeights.define_schema().inputs[1].options  # listed, as ComfyUI follows links
    message = LoadTunedWeights.validate_inputs(weights_name=NAME)
    assert "TAV Load Tuned Weights: input 'weights_name'" in message and "leads outside" in message
    assert str(outside) in message
    with pytest.raises(TAVInputError, match="leads outside"):
        load()


def test_a_rewritten_file_changes_the_cache_fingerprint(weights_folder):
    path = weights_folder / NAME
    write_tuned_weights(path, seeded_tuned_weights(tiny_unet("sd1", seed=0), seed=1))
    before = LoadTunedWeights.fingerprint_inputs(weights_name=NAME, model=None, allow_mismatch=False)
    assert LoadTunedWeights.fingerprint_inputs(weights_name=NAME) == before
    time.sleep(0.01)
    write_tuned_weights(path, seeded_tuned_weights(tiny_unet("sd1", seed=0), seed=2))
    assert LoadTunedWeights.fingerprint_inputs(weights_name=NAME) != before


LONG = "x" * 250


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("../x", "is not a plain file name"),
        ("a//b", "has an empty folder name"),
        ("a/", "has an empty folder name"),
        (LONG, "has a part of 262 bytes; each file or folder name can have at most"),
        ("/etc/x", "is an absolute path"),
    ],
)
def test_bad_save_names_are_refused_before_any_tuning(weights_folder, name, problem):
    for node, prefix in ((OneShotTune, "One-Shot Tune"), (SaveTunedWeights, "TAV Save Tuned Weights")):
        message = node.validate_inputs(save_name=name)
        assert isinstance(message, str) and message.startswith(f"{prefix}: input 'save_name': "), message
        assert problem in message
    with pytest.raises(TAVInputError, match=f"One-Shot Tune: input 'save_name': .*{problem}"):
        # would tune for 10000 steps if the name were checked afterwards
        OneShotTune.execute(None, None, None, 10000, 1e-4, 0, "off", "auto", save_name=name)


def test_a_name_taken_by_a_folder_is_refused_before_tuning(weights_folder):
    (weights_folder / "taken.safetensors").mkdir()
    (weights_folder / "file.safetensors").write_bytes(b"")
    assert "is a folder" in OneShotTune.validate_inputs(save_name="taken")
    assert "is a file, so no sub-folder" in SaveTunedWeights.validate_inputs(save_name="file.safetensors/x")


def test_loaded_model_holds_the_files_temporal_layers(weights_folder):
    weights = seeded_tuned_weights(tiny_unet("sd1", seed=0), seed=1)
    write_tuned_weights(weights_folder / NAME, weights, torch.float32)
    model, _ = load()
    state = temporal_layers_of(model).state_dict()
    assert set(state) == set(weights.temporal)
    for key, value in weights.temporal.items():
        assert torch.equal(state[key], value), key


def test_the_default_save_name_lands_directly_in_the_folder(weights_folder):
    default = next(spec.default for spec in SaveTunedWeights.define_schema().inputs if spec.id == "save_name")
    SaveTunedWeights.execute(seeded_tuned_weights(tiny_unet("sd1", seed=0), seed=1), default, "fp16")
    assert [p.relative_to(weights_folder).as_posix() for p in weights_folder.rglob("*")] == ["clip.safetensors"]
