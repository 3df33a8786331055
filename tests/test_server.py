"""The pack inside a real ComfyUI server on 127.0.0.1: import, /object_info, and a queued graph."""

import pytest
from comfyui_tune_a_video.tav_core.weights_file import load_safetensors
from tav_dev.comfy_server import make_server

PACK_NODES = [
    "TAV_InflateUNet", "TAV_OneShotTune", "TAV_SaveTunedWeights", "TAV_LoadTunedWeights", "TAV_DDIMInvertVideo",
    "TAV_Sample", "TAV_ControlCondition", "TAV_SampleFrames", "TAV_InterpolateFrames",
]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("comfy")
    server = make_server(workdir, {"loras": workdir / "loras"}).start()
    yield server
    server.stop()


def test_pack_imports_without_error(server):
    timing_lines = [line for line in server.log().splitlines() if line.rstrip().endswith("comfyui-tune-a-video")]
    assert timing_lines, "ComfyUI did not report loading the pack"
    assert all("IMPORT FAILED" not in line for line in timing_lines), timing_lines


@pytest.mark.parametrize("node_id", PACK_NODES)
def test_nodes_describe_every_input(server, node_id):
    info = server.get("/object_info")[node_id]
    assert info["category"] == "Tune-A-Video"
    assert len(info["description"]) > 40
    inputs = {**info["input"].get("required", {}), **info["input"].get("optional", {})}
    assert inputs
    for name, spec in inputs.items():
        options = spec[1] if len(spec) > 1 else {}
        assert options.get("tooltip"), f"{node_id}.{name} has no tooltip"


def test_input_free_nodes_are_listed(server):
    info = server.get("/object_info")
    assert info["TAV_InversionSampler"]["output"] == ["SAMPLER"]
    assert info["TAV_LoadDemoModel"]["output"] == ["MODEL", "CLIP", "VAE"]
    assert "toy model" in info["TAV_LoadDemoModel"]["description"]


def inflate_and_sample_prompt(kind: str) -> dict:
    return {
        "1": {"class_type": "TAVTest_TinyModelLoader", "inputs": {"kind": kind, "seed": 3}},
        "2": {"class_type": "TAV_InflateUNet", "inputs": {
            "model": ["1", 0], "attention": "sparse_causal", "temporal_layers": True,
            "temporal_position_encoding": "none", "groupnorm": "per_video"}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": "a red circle on a white wall"}},
        "4": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": ""}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 4}},
        "6": {"class_type": "KSampler", "inputs": {
            "model": ["2", 0], "seed": 1, "steps": 3, "cfg": 4.0, "sampler_name": "ddim",
            "scheduler": "ddim_uniform", "positive": ["3", 0], "negative": ["4", 0], "latent_image": ["5", 0],
            "denoise": 1.0}},
        "7": {"class_type": "SaveLatent", "inputs": {"samples": ["6", 0], "filename_prefix": f"latents/tav_{kind}"}},
    }


def test_inflate_then_ksampler_completes(server):
    entry = server.run_prompt(inflate_and_sample_prompt("sd1"))
    assert entry["status"]["status_str"] == "success", entry["status"]
    saved = list((server.output_dir / "latents").glob("tav_sd1_*.latent"))
    assert len(saved) == 1 and saved[0].stat().st_size > 0


def test_inflating_a_non_unet_model_fails_with_a_clear_message(server):
    prompt = inflate_and_sample_prompt("sd1")
    prompt["8"] = {"class_type": "TAV_InflateUNet", "inputs": {
        "model": ["2", 0], "attention": "full", "temporal_layers": False,
        "temporal_position_encoding": "none", "groupnorm": "per_frame"}}
    prompt["6"]["inputs"]["model"] = ["8", 0]
    entry = server.run_prompt(prompt)
    assert entry["status"]["status_str"] == "error"
    errors = [m for m in entry["status"]["messages"] if m[0] == "execution_error"]
    assert errors and errors[0][1]["node_type"] == "TAV_InflateUNet"
    assert "Inflate UNet: input 'model': this MODEL is already inflated" in errors[0][1]["exception_message"]


def test_tune_save_then_load_and_sample(server):
    prompt = inflate_and_sample_prompt("sd1")
    prompt["8"] = {"class_type": "TAV_OneShotTune", "inputs": {
        "model": ["2", 0], "latents": ["5", 0], "conditioning": ["3", 0], "steps": 3, "learning_rate": 1e-4,
        "seed": 0, "gradient_checkpointing": "blocks", "precision": "auto", "save_name": "server/clip",
        "caption": "a red circle on a white wall"}}
    prompt["6"]["inputs"]["model"] = ["8", 0]
    prompt["9"] = {"class_type": "PreviewImage", "inputs": {"images": ["8", 2]}}
    entry = server.run_prompt(prompt)
    assert entry["status"]["status_str"] == "success", entry["status"]
    saved = server.tuned_weights_dir / "server" / "clip.safetensors"
    assert saved.is_file()
    assert entry["outputs"]["9"]["images"], "the loss curve was not shown"

    load = inflate_and_sample_prompt("sd1")
    load["2"] = {"class_type": "TAV_LoadTunedWeights", "inputs": {
        "model": ["1", 0], "weights_name": "server/clip.safetensors", "allow_mismatch": False}}
    load["7"]["inputs"]["filename_prefix"] = "latents/tav_loaded"
    entry = server.run_prompt(load)
    assert entry["status"]["status_str"] == "success", entry["status"]
    assert list((server.output_dir / "latents").glob("tav_loaded_*.latent"))


def clip_prompt(frames: int, groupnorm: str) -> dict:
    """Tiny SD1 model, a flat-coloured clip of `frames` frames, encoded, inflated; source, empty and edit captions."""
    return {
        "1": {"class_type": "TAVTest_TinyModelLoader", "inputs": {"kind": "sd1", "seed": 3}},
        "2": {"class_type": "EmptyImage", "inputs": {
            "width": 64, "height": 64, "batch_size": frames, "color": 0x3399FF}},
        "3": {"class_type": "VAEEncode", "inputs": {"pixels": ["2", 0], "vae": ["1", 2]}},
        "4": {"class_type": "TAV_InflateUNet", "inputs": {
            "model": ["1", 0], "attention": "sparse_causal", "temporal_layers": True,
            "temporal_position_encoding": "none", "groupnorm": groupnorm}},
        "5": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": "a blue square"}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": ""}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": "a red circle"}},
    }


def test_whole_edit_chain_runs_as_one_prompt(server):
    frames = 4
    prompt = clip_prompt(frames, "per_video") | {
        "8": {"class_type": "TAV_OneShotTune", "inputs": {
            "model": ["4", 0], "latents": ["3", 0], "conditioning": ["5", 0], "steps": 2, "learning_rate": 1e-4,
            "seed": 0, "gradient_checkpointing": "blocks", "precision": "auto"}},
        "9": {"class_type": "TAV_DDIMInvertVideo", "inputs": {
            "model": ["8", 0], "latents": ["3", 0], "conditioning": ["6", 0], "steps": 4, "inversion_strength": 1.0}},
        "10": {"class_type": "TAV_Sample", "inputs": {
            "model": ["8", 0], "positive": ["7", 0], "negative": ["6", 0], "latent": ["9", 0], "steps": 4,
            "cfg": 7.5, "eta": 0.0, "seed": 0}},
        "11": {"class_type": "VAEDecode", "inputs": {"samples": ["10", 0], "vae": ["1", 2]}},
        "12": {"class_type": "PreviewImage", "inputs": {"images": ["11", 0]}},
    }
    entry = server.run_prompt(prompt)
    assert entry["status"]["status_str"] == "success", entry["status"]
    assert len(entry["outputs"]["12"]["images"]) == frames

    # The same edit steered by per-frame hints, for both control kinds.
    for kind in ("controlnet", "t2i_adapter"):
        prompt["13"] = {"class_type": "TAVTest_TinyControlLoader", "inputs": {"kind": kind, "seed": 1}}
        prompt["14"] = {"class_type": "TAV_ControlCondition", "inputs": {
            "positive": ["7", 0], "negative": ["6", 0], "control_net": ["13", 0], "frames": ["2", 0],
            "preprocessor": "color", "strength": 1.0, "start_percent": 0.0, "end_percent": 1.0,
            "low_threshold": 100, "high_threshold": 200, "line_thickness": 3, "block_size": 64}}
        prompt["10"]["inputs"].update(positive=["14", 0], negative=["14", 1])
        prompt["15"] = {"class_type": "PreviewImage", "inputs": {"images": ["14", 2]}}
        entry = server.run_prompt(prompt)
        assert entry["status"]["status_str"] == "success", (kind, entry["status"])
        assert len(entry["outputs"]["12"]["images"]) == frames and len(entry["outputs"]["15"]["images"]) == frames


def test_demo_model_and_inversion_sampler_run_as_a_prompt(server):
    """TAV Load Demo Model feeds an edit whose inversion runs through stock SamplerCustom + TAV's SAMPLER."""
    prompt = {
        "1": {"class_type": "TAV_LoadDemoModel", "inputs": {}},
        "2": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 4, "color": 0xF0F0F0}},
        "3": {"class_type": "VAEEncode", "inputs": {"pixels": ["2", 0], "vae": ["1", 2]}},
        "4": {"class_type": "TAV_InflateUNet", "inputs": {
            "model": ["1", 0], "attention": "sparse_causal", "temporal_layers": True,
            "temporal_position_encoding": "none", "groupnorm": "per_video"}},
        "5": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": ""}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {
            "clip": ["1", 1], "text": "a red circle on a white background"}},
        "7": {"class_type": "BasicScheduler", "inputs": {
            "model": ["4", 0], "scheduler": "ddim_uniform", "steps": 5, "denoise": 1.0}},
        "8": {"class_type": "TAV_InversionSampler", "inputs": {}},
        "9": {"class_type": "SamplerCustom", "inputs": {
            "model": ["4", 0], "add_noise": False, "noise_seed": 0, "cfg": 1.0, "positive": ["5", 0],
            "negative": ["5", 0], "sampler": ["8", 0], "sigmas": ["7", 0], "latent_image": ["3", 0]}},
        "10": {"class_type": "KSamplerAdvanced", "inputs": {
            "model": ["4", 0], "add_noise": "disable", "noise_seed": 0, "steps": 5, "cfg": 2.0,
            "sampler_name": "ddim", "scheduler": "ddim_uniform", "positive": ["6", 0], "negative": ["5", 0],
            "latent_image": ["9", 0], "start_at_step": 0, "end_at_step": 10000,
            "return_with_leftover_noise": "disable"}},
        "11": {"class_type": "VAEDecode", "inputs": {"samples": ["10", 0], "vae": ["1", 2]}},
        "12": {"class_type": "PreviewImage", "inputs": {"images": ["11", 0]}},
    }
    entry = server.run_prompt(prompt)
    assert entry["status"]["status_str"] == "success", entry["status"]
    assert len(entry["outputs"]["12"]["images"]) == 4


def tune_inputs(**inputs) -> dict:
    return {"class_type": "TAV_OneShotTune", "inputs": {
        "model": ["4", 0], "latents": ["3", 0], "conditioning": ["5", 0], "steps": 4, "learning_rate": 1e-3,
        "seed": 0, "gradient_checkpointing": "auto", "precision": "auto", "window": 4, "window_anchor": "clip",
        "rank": 4, "temporal_rank": 2, **inputs}}


def test_a_long_clip_tuned_low_rank_in_windows_kept_resumed_and_edited_in_windows(server):
    """Every input issue 25 added, through the real server: One-Shot Tune with window, rank, temporal_rank, auto
    checkpointing, save_every and preview_every; TAV Save Tuned Weights as_comfy_lora; the stock
    LoraLoaderModelOnly with TAV Load Tuned Weights; resume_from; DDIM Invert Video and TAV Sample in windows."""
    frames = 8
    prompt = clip_prompt(frames, "per_frame")
    prompt["8"] = tune_inputs(save_name="server/long", save_every=2, preview_every=2)
    prompt["9"] = {"class_type": "TAV_SaveTunedWeights", "inputs": {
        "tuned_weights": ["8", 1], "save_name": "server/long_split", "precision": "fp16", "format": "pack",
        "as_comfy_lora": True}}
    prompt["10"] = {"class_type": "TAV_DDIMInvertVideo", "inputs": {
        "model": ["8", 0], "latents": ["3", 0], "conditioning": ["6", 0], "steps": 3, "inversion_strength": 1.0,
        "window": 4, "overlap": 2}}
    prompt["11"] = {"class_type": "TAV_Sample", "inputs": {
        "model": ["8", 0], "positive": ["7", 0], "negative": ["6", 0], "latent": ["10", 0], "steps": 3,
        "cfg": 7.5, "eta": 0.0, "seed": 0, "window": 4, "overlap": 2}}
    prompt["12"] = {"class_type": "VAEDecode", "inputs": {"samples": ["11", 0], "vae": ["1", 2]}}
    prompt["13"] = {"class_type": "PreviewImage", "inputs": {"images": ["12", 0]}}
    entry = server.run_prompt(prompt)
    assert entry["status"]["status_str"] == "success", entry["status"]
    assert len(entry["outputs"]["13"]["images"]) == frames
    _, info = load_safetensors(server.tuned_weights_dir / "server" / "long.safetensors")
    assert (info["info.steps"], info["info.window"], info["info.rank"], info["info.temporal_rank"]) == (
        "4", "4", "4", "2")
    assert info["info.gradient_checkpointing"].startswith("auto: ")
    lora, _ = load_safetensors(server.workdir / "loras" / "server" / "long_split.safetensors")
    assert lora and all(key.startswith("diffusion_model.") for key in lora)
    split, split_info = load_safetensors(server.tuned_weights_dir / "server" / "long_split.safetensors")
    assert split_info["spatial_lora"] == "server/long_split.safetensors"
    assert split and all(key.startswith("tav_temporal.") for key in split)

    again = clip_prompt(frames, "per_frame")
    again["20"] = {"class_type": "LoraLoaderModelOnly", "inputs": {
        "model": ["1", 0], "lora_name": "server/long_split.safetensors", "strength_model": 1.0}}
    again["21"] = {"class_type": "TAV_LoadTunedWeights", "inputs": {
        "model": ["20", 0], "weights_name": "server/long_split.safetensors", "allow_mismatch": False}}
    again["22"] = {"class_type": "TAV_Sample", "inputs": {
        "model": ["21", 0], "positive": ["7", 0], "negative": ["6", 0], "latent": ["3", 0], "steps": 2,
        "cfg": 7.5, "eta": 0.0, "seed": 0, "window": 4, "overlap": 2}}
    again["23"] = {"class_type": "SaveLatent", "inputs": {"samples": ["22", 0], "filename_prefix": "latents/split"}}
    again["24"] = {"class_type": "TAV_LoadTunedWeights", "inputs": {
        "model": ["1", 0], "weights_name": "server/long.safetensors", "allow_mismatch": False}}
    again["25"] = tune_inputs(steps=2, resume_from=["24", 1], save_name="server/long_more")
    again["26"] = {"class_type": "PreviewImage", "inputs": {"images": ["25", 2]}}  # an output, so the tune runs
    entry = server.run_prompt(again)
    assert entry["status"]["status_str"] == "success", entry["status"]
    assert list((server.output_dir / "latents").glob("split_*.latent"))
    _, resumed = load_safetensors(server.tuned_weights_dir / "server" / "long_more.safetensors")
    assert (resumed["info.steps"], resumed["info.resumed_at_step"]) == ("6", "4")
