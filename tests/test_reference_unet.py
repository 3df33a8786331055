"""Original Tune-A-Video (showlab) UNet3D checkpoints: loading, saving, the reference's trainable set, refusals."""

import json
import os

import comfy.utils
import pytest
import torch
from comfyui_tune_a_video.comfy_glue import model_folders
from comfyui_tune_a_video.comfy_glue.model_folders import reference_unet_files
from comfyui_tune_a_video.comfy_glue.one_shot_tune import tune
from comfyui_tune_a_video.comfy_glue.unet_inflation import inflate_model, inflation_of, temporal_layers_of
from comfyui_tune_a_video.nodes.inflate_unet import NODE as INFLATE
from comfyui_tune_a_video.nodes.load_reference_unet import NODE as LOAD
from comfyui_tune_a_video.nodes.load_reference_unet import LoadReferenceUNet
from comfyui_tune_a_video.nodes.one_shot_tune import NODE as TUNE
from comfyui_tune_a_video.nodes.tuned_weights_io import SAVE_NODE, SaveTunedWeights
from comfyui_tune_a_video.nodes.weights_in_prompt import refuse_save_and_load_together
from comfyui_tune_a_video.tav_core.errors import TAVInputError
from comfyui_tune_a_video.tav_core.inflation_config import InflationConfig
from comfyui_tune_a_video.tav_core.reference_unet import REFERENCE_INFLATION
from comfyui_tune_a_video.tav_core.tuning import Trainable, TuneSettings
from safetensors.torch import save_file
from tav_dev.tiny_models import CONTEXT_DIM, text_cond, tiny_unet
from tav_dev.unet_harness import apply_unet, seeded_tuned_weights

FRAMES, SIZE = 4, 8
WEIGHTS = "unet/diffusion_pytorch_model"

# A tiny SD1-shaped UNet3D config, every field as diffusers 0.11.1 writes it for the reference's model.
TINY_SD1_CONFIG = {
    "_class_name": "UNet3DConditionModel", "_diffusers_version": "0.11.1", "act_fn": "silu",
    "attention_head_dim": 8, "block_out_channels": [32, 64], "center_input_sample": False,
    "class_embed_type": None, "cross_attention_dim": CONTEXT_DIM,
    "down_block_types": ["CrossAttnDownBlock3D", "CrossAttnDownBlock3D"], "downsample_padding": 1,
    "dual_cross_attention": False, "flip_sin_to_cos": True, "freq_shift": 0, "in_channels": 4,
    "layers_per_block": 2, "mid_block_scale_factor": 1, "mid_block_type": "UNetMidBlock3DCrossAttn",
    "norm_eps": 1e-05, "norm_num_groups": 32, "num_class_embeds": None, "only_cross_attention": False,
    "out_channels": 4, "resnet_time_scale_shift": "default", "sample_size": 64,
    "up_block_types": ["CrossAttnUpBlock3D", "CrossAttnUpBlock3D"], "upcast_attention": False,
    "use_linear_projection": False,
}
# Written out by hand for that config: each diffusers transformer block and the ComfyUI block it is.
TINY_SD1_BLOCKS = {
    "down_blocks.0.attentions.0": "input_blocks.1.1", "down_blocks.0.attentions.1": "input_blocks.2.1",
    "down_blocks.1.attentions.0": "input_blocks.4.1", "down_blocks.1.attentions.1": "input_blocks.5.1",
    "mid_block.attentions.0": "middle_block.1",
    **{f"up_blocks.0.attentions.{i}": f"output_blocks.{i}.1" for i in range(3)},
    **{f"up_blocks.1.attentions.{i}": f"output_blocks.{3 + i}.1" for i in range(3)},
}


def video() -> dict:
    samples = torch.full((FRAMES, 4, SIZE, SIZE), -0.5)
    for f in range(FRAMES):
        samples[f, :, 2:5, 1 + f: 4 + f] = 1.0
    return {"samples": samples}


def prediction(model) -> torch.Tensor:
    generator = torch.Generator().manual_seed(7)
    x = torch.randn(2 * FRAMES, 4, SIZE, SIZE, generator=generator)
    context = torch.randn(2, 77, CONTEXT_DIM, generator=generator).repeat_interleave(FRAMES, 0)
    return apply_unet(model, x, 2.0, context, [1, 0])


def hand_built_checkpoint(source, seed: int) -> dict[str, torch.Tensor]:
    """A reference-layout state dict: `source`'s 2-D weights under diffusers keys, random temporal layers."""
    mapping = comfy.utils.unet_to_diffusers(source.model.model_config.unet_config)
    unet = source.model.diffusion_model.state_dict()
    tensors = {d: unet[c].clone() for d, c in mapping.items() if c in unet}
    generator = torch.Generator().manual_seed(seed)
    for block in TINY_SD1_BLOCKS:
        prefix = f"{block}.transformer_blocks.0"
        dim = tensors[f"{prefix}.norm1.weight"].shape[0]
        for name in ("to_q", "to_k", "to_v"):
            tensors[f"{prefix}.attn_temp.{name}.weight"] = 0.3 * torch.randn(dim, dim, generator=generator)
        tensors[f"{prefix}.attn_temp.to_out.0.weight"] = 0.3 * torch.randn(dim, dim, generator=generator)
        tensors[f"{prefix}.attn_temp.to_out.0.bias"] = 0.1 * torch.randn(dim, generator=generator)
        tensors[f"{prefix}.norm_temp.weight"] = 1 + 0.1 * torch.randn(dim, generator=generator)
        tensors[f"{prefix}.norm_temp.bias"] = 0.1 * torch.randn(dim, generator=generator)
    return tensors


def expected_model(source, tensors: dict[str, torch.Tensor]):
    """`source` inflated as the reference runs, its temporal layers copied in from `tensors` by the hand table."""
    model = inflate_model(source, REFERENCE_INFLATION, INFLATE)
    sites = {site.path: site for site in inflation_of(model).sites.transformer_blocks}
    layers = temporal_layers_of(model).layers
    with torch.no_grad():
        for block, comfy_block in TINY_SD1_BLOCKS.items():
            layer = layers[sites[f"diffusion_model.{comfy_block}.transformer_blocks.0"].name]
            prefix = f"{block}.transformer_blocks.0"
            for name in ("to_q", "to_k", "to_v"):
                getattr(layer, name).weight.copy_(tensors[f"{prefix}.attn_temp.{name}.weight"])
            layer.to_out.weight.copy_(tensors[f"{prefix}.attn_temp.to_out.0.weight"])
            layer.to_out.bias.copy_(tensors[f"{prefix}.attn_temp.to_out.0.bias"])
            layer.norm.weight.copy_(tensors[f"{prefix}.norm_temp.weight"])
            layer.norm.bias.copy_(tensors[f"{prefix}.norm_temp.bias"])
    return model


def write_checkpoint(folder, tensors: dict, config: dict | None, suffix: str = ".safetensors") -> str:
    unet = folder / "unet"
    unet.mkdir(parents=True)
    if config is not None:
        (unet / "config.json").write_text(json.dumps(config))
    if suffix == ".bin":
        torch.save(tensors, unet / "diffusion_pytorch_model.bin")
    else:
        save_file(tensors, str(unet / f"diffusion_pytorch_model{suffix}"))
    return f"{folder.name}/{WEIGHTS}{suffix}"


def load(base, name: str):
    return LoadReferenceUNet.execute(base, name).result[0]


@pytest.mark.parametrize("kind", ["sd1", "sd2"])  # heads by count / by width, conv / linear proj, eps / v
@pytest.mark.parametrize("base_seed", [0, 9])  # onto the checkpoint tuned from, and onto other SD weights
def test_a_tune_saved_as_reference_loads_back_with_identical_predictions(weights_folder, kind, base_seed):
    tuned = tune(
        inflate_model(tiny_unet(kind, seed=0), REFERENCE_INFLATION, INFLATE), video(), text_cond(kind, 1),
        TuneSettings(steps=3, learning_rate=1e-2, trainable=Trainable.REFERENCE), TUNE,
    )
    SaveTunedWeights.execute(tuned.weights, "skier", "fp32", "reference", tuned.model)
    config = json.loads((weights_folder / "skier/unet/config.json").read_text())
    assert config["_class_name"] == "UNet3DConditionModel"
    loaded = load(tiny_unet(kind, seed=base_seed), f"skier/{WEIGHTS}.safetensors")
    assert inflation_of(loaded).config == REFERENCE_INFLATION
    torch.testing.assert_close(prediction(loaded), prediction(tuned.model), rtol=0, atol=0)


@pytest.mark.parametrize("suffix", [".safetensors", ".bin"])
def test_the_loaded_model_computes_a_hand_built_reference_checkpoint(weights_folder, suffix):
    source = tiny_unet("sd1", seed=4)
    tensors = hand_built_checkpoint(source, seed=5)
    name = write_checkpoint(weights_folder / "hand", tensors, TINY_SD1_CONFIG, suffix)
    loaded = load(tiny_unet("sd1", seed=0), name)
    expected = prediction(expected_model(source, tensors))
    torch.testing.assert_close(prediction(loaded), expected, rtol=1e-5, atol=1e-5)
    fresh = prediction(inflate_model(source, REFERENCE_INFLATION, INFLATE))
    assert (expected - fresh).abs().max() > 1e-2  # the temporal path is live, so a misplaced layer would show


def test_reference_files_are_listed_at_any_depth_and_pack_files_are_not(weights_folder):
    from comfyui_tune_a_video.comfy_glue.model_folders import pack_weights_files

    (weights_folder / "pack.safetensors").write_bytes(b"x")
    for folder in ("a/b/run", "c"):
        (weights_folder / folder / "unet").mkdir(parents=True)
        (weights_folder / folder / "unet/diffusion_pytorch_model.bin").write_bytes(b"x")
    (weights_folder / "c/unet/diffusion_pytorch_model.safetensors").write_bytes(b"x")
    assert reference_unet_files() == [f"a/b/run/{WEIGHTS}.bin", f"c/{WEIGHTS}.bin", f"c/{WEIGHTS}.safetensors"]
    assert pack_weights_files() == ["pack.safetensors"]  # TAV Load Tuned Weights lists no reference UNet


class CodeInPickle:
    def __reduce__(self):
        return (os.getcwd, ())


def drop_norm_temp(tensors: dict, config: dict) -> None:
    del tensors["down_blocks.0.attentions.0.transformer_blocks.0.norm_temp.weight"]


def add_temporal_bias(tensors: dict, config: dict) -> None:
    tensors["mid_block.attentions.0.transformer_blocks.0.attn_temp.to_k.bias"] = torch.zeros(64)


REFUSALS = {
    "no config": (None, ".safetensors", "unet_name", "there is no config.json beside it"),
    "a VAE's config": ({"_class_name": "AutoencoderKL"}, ".safetensors", "unet_name", "not a UNet3DConditionModel"),
    "an SDXL-style config": ({**TINY_SD1_CONFIG, "addition_embed_type": "text_time"}, ".safetensors",
                             "unet_name", "addition_embed_type 'text_time'"),
    "another architecture": ({**TINY_SD1_CONFIG, "cross_attention_dim": 64}, ".safetensors", "model",
                             "context_dim 32 vs 64"),
    "missing temporal keys": (drop_norm_temp, ".safetensors", "unet_name",
                              "no down_blocks.0.attentions.0.transformer_blocks.0.norm_temp.weight"),
    "extra temporal keys": (add_temporal_bias, ".safetensors", "unet_name",
                            "unexpected mid_block.attentions.0.transformer_blocks.0.attn_temp.to_k.bias"),
    "a corrupt file": ("corrupt", ".safetensors", "unet_name", "not a readable safetensors file"),
    "a pickle holding code": ("code", ".bin", "unet_name", "weights-only loader refused it"),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_bad_checkpoints_are_refused_naming_node_input_and_problem(weights_folder, case):
    change, suffix, input_name, problem = REFUSALS[case]
    tensors, config = hand_built_checkpoint(tiny_unet("sd1", seed=4), seed=5), dict(TINY_SD1_CONFIG)
    if callable(change):
        change(tensors, config)
    elif isinstance(change, dict) or change is None:
        config = change
    if change == "code":
        tensors = {"weight": torch.zeros(1), "payload": CodeInPickle()}
    name = write_checkpoint(weights_folder / "bad", {} if change == "code" else tensors, config, suffix)
    path = weights_folder / "bad" / name.removeprefix("bad/")
    if change == "corrupt" or (isinstance(change, dict) or change is None):
        path.write_bytes(b"\x00not safetensors")  # config problems are named before the file is read
    if change == "code":
        torch.save(tensors, path)
    with pytest.raises(TAVInputError) as error:
        load(tiny_unet("sd1", seed=0), name)
    assert str(error.value).startswith(f"{LOAD}: input '{input_name}': "), str(error.value)
    assert problem in str(error.value)


def test_an_inflated_model_is_refused(weights_folder):
    name = write_checkpoint(weights_folder / "ok", hand_built_checkpoint(tiny_unet("sd1", 4), 5), TINY_SD1_CONFIG)
    with pytest.raises(TAVInputError, match=f"^{LOAD}: input 'model': this MODEL is already inflated"):
        load(inflate_model(tiny_unet("sd1"), REFERENCE_INFLATION, INFLATE), name)


def test_saving_as_reference_needs_the_model_and_the_references_inflation(weights_folder):
    base = tiny_unet("sd1", seed=0)
    reference_weights = seeded_tuned_weights(base, seed=1, config=REFERENCE_INFLATION)
    with pytest.raises(TAVInputError, match=f"^{SAVE_NODE}: input 'model': format reference"):
        SaveTunedWeights.execute(reference_weights, "a", "fp16", "reference")
    pack_default = seeded_tuned_weights(base, seed=1, config=InflationConfig())
    with pytest.raises(TAVInputError, match=f"^{SAVE_NODE}: input 'tuned_weights': .*groupnorm=per_frame"):
        SaveTunedWeights.execute(
            pack_default, "a", "fp16", "reference", inflate_model(base, InflationConfig(), INFLATE)
        )
    other_base = inflate_model(tiny_unet("sd1", seed=2), REFERENCE_INFLATION, INFLATE)
    with pytest.raises(TAVInputError, match=f"^{SAVE_NODE}: input 'model': these weights were tuned on another"):
        SaveTunedWeights.execute(reference_weights, "a", "fp16", "reference", other_base)
    assert not any(weights_folder.iterdir())


def test_a_failed_reference_save_leaves_no_folder_and_keeps_the_previous_one(weights_folder, monkeypatch):
    base = tiny_unet("sd1", seed=0)
    model = inflate_model(base, REFERENCE_INFLATION, INFLATE)
    SaveTunedWeights.execute(seeded_tuned_weights(base, 1, REFERENCE_INFLATION), "run", "fp16", "reference", model)
    before = (weights_folder / f"run/{WEIGHTS}.safetensors").read_bytes()

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(model_folders, "save_atomically", fail)
    for name in ("run", "new"):
        with pytest.raises(OSError, match="disk full"):
            SaveTunedWeights.execute(
                seeded_tuned_weights(base, 2, REFERENCE_INFLATION), name, "fp16", "reference", model
            )
    assert (weights_folder / f"run/{WEIGHTS}.safetensors").read_bytes() == before
    assert sorted(p.name for p in (weights_folder / "run").iterdir()) == ["unet"]
    assert not (weights_folder / "new").exists() or not any((weights_folder / "new").iterdir())


def test_a_prompt_that_saves_and_loads_the_same_reference_folder_is_refused(weights_folder):
    name = write_checkpoint(weights_folder / "clip", hand_built_checkpoint(tiny_unet("sd1", 4), 5), TINY_SD1_CONFIG)
    prompt = {
        "1": {"class_type": "TAV_SaveTunedWeights", "inputs": {"save_name": "clip", "format": "reference"}},
        "2": {"class_type": "TAV_LoadReferenceUNet", "inputs": {"unet_name": name}},
    }
    hidden = type("Hidden", (), {"prompt": prompt})()
    with pytest.raises(TAVInputError, match=f"^{LOAD}: input 'unet_name': this prompt also saves"):
        refuse_save_and_load_together(
            hidden, LOAD, "unet_name", name, saving=False, path=weights_folder / "clip" / name.removeprefix("clip/")
        )


def tuned_temporal(trainable: Trainable) -> dict[str, torch.Tensor]:
    model = inflate_model(tiny_unet("sd1", seed=0), REFERENCE_INFLATION, INFLATE)
    settings = TuneSettings(steps=2, learning_rate=1e-3, seed=3, trainable=trainable)
    return tune(model, video(), text_cond("sd1", 1), settings, TUNE).weights.temporal


def test_reference_trainable_freezes_norm_temp_and_starts_the_output_bias_at_nn_linear_init():
    reference, pack = tuned_temporal(Trainable.REFERENCE), tuned_temporal(Trainable.PACK)
    norms = [key for key in reference if ".norm." in key]
    biases = [key for key in reference if key.endswith("to_out.bias")]
    for key in norms:
        fresh = torch.ones_like(reference[key]) if key.endswith("weight") else torch.zeros_like(reference[key])
        assert torch.equal(reference[key], fresh), key
    assert any(not torch.equal(pack[key], reference[key]) for key in norms)  # pack trains them
    for key in biases:
        bound = 1 / reference[key].shape[0] ** 0.5  # in_features == dim for the tiny blocks
        assert reference[key].abs().max() <= bound + 2 * 1e-3  # U(-bound, bound), then two AdamW steps of 1e-3
        assert reference[key].abs().mean() > 10 * pack[key].abs().mean()  # pack starts at exactly zero


def test_a_real_server_tunes_saves_as_reference_loads_and_samples(tmp_path):
    from tav_dev.comfy_server import make_server

    tiny = {"class_type": "TAVTest_TinyModelLoader", "inputs": {"kind": "sd1", "seed": 3}}
    text = {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": "a red circle"}}
    latent = {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 4}}
    tune_prompt = {
        "1": tiny, "2": text, "3": latent,
        "4": {"class_type": "TAV_InflateUNet", "inputs": {
            "model": ["1", 0], "attention": "sparse_causal", "temporal_layers": True,
            "temporal_position_encoding": "none", "groupnorm": "per_video"}},
        "5": {"class_type": "TAV_OneShotTune", "inputs": {
            "model": ["4", 0], "latents": ["3", 0], "conditioning": ["2", 0], "steps": 2, "learning_rate": 1e-3,
            "seed": 0, "gradient_checkpointing": "off", "precision": "fp32", "trainable": "reference"}},
        "6": {"class_type": "TAV_SaveTunedWeights", "inputs": {
            "tuned_weights": ["5", 1], "save_name": "clip", "precision": "fp16", "format": "reference",
            "model": ["5", 0]}},
    }
    sample_prompt = {
        "1": tiny, "2": text, "3": latent,
        "4": {"class_type": "TAV_LoadReferenceUNet", "inputs": {
            "model": ["1", 0], "unet_name": f"clip/{WEIGHTS}.safetensors"}},
        "5": {"class_type": "KSampler", "inputs": {
            "model": ["4", 0], "seed": 1, "steps": 2, "cfg": 2.0, "sampler_name": "ddim", "scheduler": "ddim_uniform",
            "positive": ["2", 0], "negative": ["2", 0], "latent_image": ["3", 0], "denoise": 1.0}},
        "6": {"class_type": "SaveLatent", "inputs": {"samples": ["5", 0], "filename_prefix": "latents/reference"}},
    }
    server = make_server(tmp_path).start()
    try:
        assert "TAV_LoadReferenceUNet" in server.get("/object_info")
        entry = server.run_prompt(tune_prompt)
        assert entry["status"]["status_str"] == "success", entry["status"]
        assert (server.tuned_weights_dir / "clip/unet/config.json").is_file()
        entry = server.run_prompt(sample_prompt)
        assert entry["status"]["status_str"] == "success", entry["status"]
        assert list((server.output_dir / "latents").glob("reference_*.latent"))
    finally:
        server.stop()
