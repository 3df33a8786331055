"""Against a real ComfyUI server on 127.0.0.1: no stale tuned weights (also under --cache-lru), no tune lost to a
bad name or a failed save, no NaN through a number input, and every bad weights file named."""

import time

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from tav_dev.comfy_server import make_server
from tav_dev.tiny_models import tiny_unet
from tav_dev.unet_harness import seeded_tuned_weights, write_tuned_weights

MODEL_SEED = 3  # the test loader's tiny sd1 model in the server, rebuilt here to write weights for it


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    server = make_server(tmp_path_factory.mktemp("comfy")).start()
    server.tuned_weights_dir.mkdir(parents=True, exist_ok=True)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def lru_server(tmp_path_factory):
    server = make_server(tmp_path_factory.mktemp("comfy_lru"), extra_args=["--cache-lru", "10"]).start()
    server.tuned_weights_dir.mkdir(parents=True, exist_ok=True)
    yield server
    server.stop()


def node_error(server, prompt: dict) -> str:
    entry = server.run_prompt(prompt)
    assert entry["status"]["status_str"] == "error", entry["status"]
    errors = [data for kind, data in entry["status"]["messages"] if kind == "execution_error"]
    return errors[0]["exception_message"]


def refusal(server, prompt: dict) -> str:
    """The body of ComfyUI's answer when it refuses a prompt at queue time (validation)."""
    with pytest.raises(RuntimeError, match="ComfyUI refused the prompt") as refused:
        server.queue(prompt)
    return str(refused.value)


def load_and_sample(weights_name: str, prefix: str) -> dict:
    return {
        "1": {"class_type": "TAVTest_TinyModelLoader", "inputs": {"kind": "sd1", "seed": MODEL_SEED}},
        "2": {"class_type": "TAV_LoadTunedWeights", "inputs": {
            "model": ["1", 0], "weights_name": weights_name, "allow_mismatch": False}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": "a red circle"}},
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 2}},
        "5": {"class_type": "KSampler", "inputs": {
            "model": ["2", 0], "seed": 1, "steps": 1, "cfg": 1.0, "sampler_name": "euler", "scheduler": "normal",
            "positive": ["3", 0], "negative": ["3", 0], "latent_image": ["4", 0], "denoise": 1.0}},
        "6": {"class_type": "SaveLatent", "inputs": {"samples": ["5", 0], "filename_prefix": f"latents/{prefix}"}},
    }


def tune_prompt(save_name: str, steps: int = 2, **tune_inputs) -> dict:
    return {
        "1": {"class_type": "TAVTest_TinyModelLoader", "inputs": {"kind": "sd1", "seed": MODEL_SEED}},
        "2": {"class_type": "TAV_InflateUNet", "inputs": {
            "model": ["1", 0], "attention": "sparse_causal", "temporal_layers": True,
            "temporal_position_encoding": "none", "groupnorm": "per_frame"}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": "a red circle"}},
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 2}},
        "7": {"class_type": "TAV_OneShotTune", "inputs": {
            "model": ["2", 0], "latents": ["4", 0], "conditioning": ["3", 0], "steps": steps, "learning_rate": 1e-4,
            "seed": 0, "gradient_checkpointing": "off", "precision": "auto", "save_name": save_name, "caption": "",
            **tune_inputs}},
        "8": {"class_type": "PreviewImage", "inputs": {"images": ["7", 2]}},
    }


def saved_latents(server, prefix: str) -> list:
    return sorted((server.output_dir / "latents").glob(f"{prefix}_*.latent"))


def run_and_read_latent(server, prompt: dict, prefix: str) -> torch.Tensor:
    before = saved_latents(server, prefix)
    entry = server.run_prompt(prompt)
    assert entry["status"]["status_str"] == "success", entry["status"]
    new = [path for path in saved_latents(server, prefix) if path not in before]
    assert len(new) == 1, "the load and everything after it did not run again"
    return load_file(str(new[0]))["latent_tensor"]


@pytest.mark.parametrize("which", ["server", "lru_server"])
def test_a_rewritten_weights_file_is_loaded_again(which, request):
    """The file under a name changes on disk: the next queue must use the new weights, not cached ones."""
    server = request.getfixturevalue(which)
    base = tiny_unet("sd1", seed=MODEL_SEED)
    path = server.tuned_weights_dir / "rewritten.safetensors"
    prompt = load_and_sample("rewritten.safetensors", f"rewritten_{which}")
    write_tuned_weights(path, seeded_tuned_weights(base, seed=1))
    first = run_and_read_latent(server, prompt, f"rewritten_{which}")
    time.sleep(0.01)
    write_tuned_weights(path, seeded_tuned_weights(base, seed=2))
    second = run_and_read_latent(server, prompt, f"rewritten_{which}")
    assert not torch.allclose(first, second, atol=1e-4)
    write_tuned_weights(path, seeded_tuned_weights(base, seed=1))
    torch.testing.assert_close(run_and_read_latent(server, prompt, f"rewritten_{which}"), first)


def test_one_prompt_that_saves_and_loads_a_name_is_refused_before_tuning(server):
    path = server.tuned_weights_dir / "same.safetensors"
    write_tuned_weights(path, seeded_tuned_weights(tiny_unet("sd1", seed=MODEL_SEED), seed=1))
    before = path.read_bytes()
    prompt = tune_prompt("same", steps=2000)
    loaded = load_and_sample("same.safetensors", "same")
    prompt["20"] = {**loaded["2"], "inputs": {**loaded["2"]["inputs"], "model": ["1", 0]}}
    prompt["21"] = {**loaded["5"], "inputs": {**loaded["5"]["inputs"], "model": ["20", 0]}}
    prompt["22"] = {**loaded["6"], "inputs": {**loaded["6"]["inputs"], "samples": ["21", 0]}}
    message = node_error(server, prompt)
    assert "this prompt also" in message and "same.safetensors" in message, message
    assert "ComfyUI does not order the two" in message
    assert path.read_bytes() == before, "the tune ran and saved over the file"


@pytest.mark.parametrize(
    ("save_name", "problem"),
    [("../x", "not a plain file name"), ("a//b", "empty folder name"), ("n" * 250, "has a part of 262 bytes")],
    ids=["dotdot", "double slash", "250 characters"],
)
def test_bad_save_names_are_refused_when_queued(server, save_name, problem):
    body = refusal(server, tune_prompt(save_name, steps=2000))
    assert "One-Shot Tune: input 'save_name'" in body and problem in body, body


@pytest.mark.parametrize(
    ("node", "inputs", "input_name"),
    [
        ("10", {"cfg": float("nan")}, "cfg"),
        ("10", {"eta": float("nan")}, "eta"),
        ("9", {"inversion_strength": float("inf")}, "inversion_strength"),
        ("7", {"learning_rate": float("nan")}, "learning_rate"),
    ],
)
def test_non_finite_numbers_are_refused_when_queued(server, node, inputs, input_name):
    prompt = tune_prompt("")
    prompt["5"] = {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": ""}}
    prompt["9"] = {"class_type": "TAV_DDIMInvertVideo", "inputs": {
        "model": ["7", 0], "latents": ["4", 0], "conditioning": ["5", 0], "steps": 2, "inversion_strength": 1.0}}
    prompt["10"] = {"class_type": "TAV_Sample", "inputs": {
        "model": ["7", 0], "positive": ["3", 0], "negative": ["5", 0], "latent": ["9", 0], "steps": 2, "cfg": 7.5,
        "eta": 0.0, "seed": 0}}
    prompt["11"] = {"class_type": "SaveLatent", "inputs": {"samples": ["10", 0], "filename_prefix": "latents/nan"}}
    prompt[node]["inputs"].update(inputs)
    del prompt["8"]  # ComfyUI runs the outputs that pass validation: the latent is the only one
    body = refusal(server, prompt)
    assert f"input '{input_name}'" in body and "is not a number: give a finite value" in body, body


def test_a_failed_save_keeps_the_finished_tune(server):
    """The disk fills up while tuning: the tuned MODEL still reaches the sampler, nothing half-written stays."""
    prompt = tune_prompt("full_disk")
    prompt["1b"] = {"class_type": "TAVTest_FailNextSave", "inputs": {"model": ["1", 0]}}
    prompt["2"]["inputs"]["model"] = ["1b", 0]
    prompt["10"] = {"class_type": "KSampler", "inputs": {
        "model": ["7", 0], "seed": 1, "steps": 1, "cfg": 1.0, "sampler_name": "euler", "scheduler": "normal",
        "positive": ["3", 0], "negative": ["3", 0], "latent_image": ["4", 0], "denoise": 1.0}}
    prompt["11"] = {"class_type": "SaveLatent", "inputs": {"samples": ["10", 0], "filename_prefix": "latents/kept"}}
    entry = server.run_prompt(prompt)
    assert entry["status"]["status_str"] == "success", entry["status"]
    assert saved_latents(server, "kept"), "the tuned model did not reach the sampler"
    assert not list(server.tuned_weights_dir.rglob("full_disk*")) and not list(server.tuned_weights_dir.rglob(".*"))
    assert "saving it as 'full_disk' failed ([Errno 28] No space left on device" in server.log()


def test_bad_weights_files_are_named_with_what_is_wrong(server, tmp_path):
    folder = server.tuned_weights_dir
    good = seeded_tuned_weights(tiny_unet("sd1", seed=MODEL_SEED), seed=1)
    write_tuned_weights(folder / "good.safetensors", good)
    (folder / "truncated.safetensors").write_bytes((folder / "good.safetensors").read_bytes()[:-64])
    tensors = load_file(str(folder / "good.safetensors"))
    with safe_open(str(folder / "good.safetensors"), "pt") as reader:
        metadata = reader.metadata()
    delta = next(key for key in sorted(tensors) if key.endswith(".diff"))
    save_file({**tensors, delta: torch.full_like(tensors[delta], float("nan"))}, str(folder / "nan.safetensors"),
              metadata=metadata)
    save_file({**tensors, delta: torch.zeros(3, 3, dtype=torch.float16)}, str(folder / "shape.safetensors"),
              metadata=metadata)
    outside = tmp_path / "outside.safetensors"
    write_tuned_weights(outside, good)
    (folder / "link.safetensors").symlink_to(outside)
    cases = {
        "truncated.safetensors": "not a readable safetensors file",
        "nan.safetensors": "NaN or infinite values",
        "shape.safetensors": "do not fit this model",
    }
    for name, problem in cases.items():
        message = node_error(server, load_and_sample(name, "bad"))
        assert message.startswith(f"TAV Load Tuned Weights: input 'weights_name': {name} ("), message
        assert problem in message, message
    body = refusal(server, load_and_sample("link.safetensors", "bad"))
    assert "leads outside" in body and str(outside) in body, body
    assert run_and_read_latent(server, load_and_sample("good.safetensors", "good"), "good").isfinite().all()
