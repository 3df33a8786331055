"""The embedded demo model: a toy text-to-image model of the shapes world, served as ComfyUI's own
MODEL (SD1.x UNet config, epsilon, SD's schedule), CLIP (SD1 classes and tokenizer) and VAE."""

import json
from pathlib import Path

import comfy.model_base
import comfy.model_management
import comfy.model_patcher
import comfy.sd
import comfy.sd1_clip
import comfy.supported_models
import comfy.supported_models_base
import torch
from comfy.ldm.models.autoencoder import AutoencoderKL

from ..shapes_demo.autoencoder import ShapesAutoencoder
from ..tav_core.weights_file import load_safetensors, save_atomically
from .model_folders import DEMO_MOTION_FOLDER

DEMO_MODEL_FILE = Path(__file__).resolve().parents[1] / "demo_model" / "shapes_world.safetensors"
DEMO_MOTION_FILE = DEMO_MOTION_FOLDER / "tav_shapes_world_motion.safetensors"
TEXT_WIDTH = 64
CLIP_CONFIG = {"hidden_size": TEXT_WIDTH, "intermediate_size": 128, "num_attention_heads": 2, "num_hidden_layers": 2}
UNET_CONFIG = {
    "use_checkpoint": False, "image_size": 32, "use_spatial_transformer": True, "legacy": False,
    "in_channels": 4, "out_channels": 4, "model_channels": 64, "num_res_blocks": [1, 1],
    "channel_mult": [1, 2], "transformer_depth": [1, 1], "transformer_depth_output": [1, 1, 1, 1],
    "transformer_depth_middle": 1, "use_linear_in_transformer": False, "context_dim": TEXT_WIDTH,
    "adm_in_channels": None, "use_temporal_resblock": False, "use_temporal_attention": False,
}
AUTOENCODER_CONFIG = {"latent_channels": 4, "width": 96, "blocks": 3}


def build_unet(dtype: torch.dtype = torch.float32) -> comfy.model_patcher.ModelPatcher:
    model_config = comfy.supported_models.SD15(dict(UNET_CONFIG))
    model_config.unet_config["num_heads"] = 4
    model_config.set_inference_dtype(dtype, None)
    model = comfy.model_base.BaseModel(model_config, model_type=comfy.model_base.ModelType.EPS)
    return comfy.model_patcher.ModelPatcher(
        model, load_device=comfy.model_management.get_torch_device(),
        offload_device=comfy.model_management.unet_offload_device(),
    )


def build_clip() -> comfy.sd.CLIP:
    target = comfy.supported_models_base.ClipTarget(comfy.sd1_clip.SD1Tokenizer, comfy.sd1_clip.SD1ClipModel)
    return comfy.sd.CLIP(target, model_options={"clip_l_model_config": CLIP_CONFIG})


def build_vae(autoencoder: ShapesAutoencoder) -> comfy.sd.VAE:
    """comfy.sd.VAE's own bookkeeping (pixel range, 8x factor, memory, devices) around our autoencoder.

    ComfyUI builds a small stand-in KL model from the config first (given its own weights, so that it logs no
    missing keys); our autoencoder then takes its place."""
    params = {"embed_dim": 4, "ddconfig": {
        "double_z": True, "z_channels": 4, "resolution": 64, "in_channels": 3, "out_ch": 3, "ch": 32,
        "ch_mult": [1], "num_res_blocks": 0, "attn_resolutions": [], "dropout": 0.0}}
    vae = comfy.sd.VAE(sd=AutoencoderKL(**params).state_dict(), config={"params": params})
    autoencoder = autoencoder.to(vae.vae_dtype).eval()
    vae.first_stage_model = autoencoder
    vae.patcher = comfy.model_patcher.ModelPatcher(
        autoencoder, load_device=vae.device, offload_device=vae.patcher.offload_device
    )
    return vae


def save_demo_model(path: Path, unet, clip, autoencoder: ShapesAutoencoder, info: dict) -> None:
    """One fp16 safetensors file with the three parts and how they were trained."""
    tensors = {f"unet.{k}": v.half() for k, v in unet.model.diffusion_model.state_dict().items()}
    tensors.update({f"clip.{k}": v.half() for k, v in clip.cond_stage_model.state_dict().items()})
    tensors.update({f"vae.{k}": v.half() for k, v in autoencoder.state_dict().items()})
    save_atomically(path, tensors, {"format": "tune-a-video/shapes-world-demo/1", "info": json.dumps(info)})


def load_demo_model(path: Path = DEMO_MODEL_FILE):
    """MODEL, CLIP and VAE of the demo file."""
    tensors, _ = load_safetensors(path)
    unet = build_unet()
    unet.model.diffusion_model.load_state_dict(_part(tensors, "unet."))
    clip = build_clip()
    clip.cond_stage_model.load_state_dict(_part(tensors, "clip."), strict=False)
    autoencoder = ShapesAutoencoder(**AUTOENCODER_CONFIG)
    autoencoder.load_state_dict(_part(tensors, "vae."))
    return unet, clip, build_vae(autoencoder)


def _part(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {key[len(prefix):]: value.float() for key, value in tensors.items() if key.startswith(prefix)}
