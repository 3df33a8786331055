"""Tiny SD1.x / SD2.x / SDXL-shaped models built from ComfyUI's own classes with seeded random weights.

Same code paths as real checkpoints (supported_models configs, model_base classes, ModelPatcher,
comfy.sd.CLIP with the stock SD1 tokenizer), just small enough for a 2-core CPU.
"""

import math

import comfy.cldm.cldm
import comfy.controlnet
import comfy.model_base
import comfy.model_management
import comfy.model_patcher
import comfy.ops
import comfy.sd
import comfy.sd1_clip
import comfy.supported_models
import comfy.supported_models_base
import comfy.t2i_adapter.adapter
import torch

CONTEXT_DIM = 32
HEAD_CHANNELS = 16
_UNET_BASE = {
    "use_checkpoint": False,
    "image_size": 32,
    "use_spatial_transformer": True,
    "legacy": False,
    "in_channels": 4,
    "out_channels": 4,
    "model_channels": 32,
    "use_temporal_resblock": False,
    "use_temporal_attention": False,
}
UNET_KINDS = {
    # SD1.x: conv proj_in/out, heads by count, SD's two ResNet blocks per level (T2I-Adapters rely on it).
    "sd1": (comfy.supported_models.SD15, comfy.model_base.ModelType.EPS, {
        "adm_in_channels": None, "num_res_blocks": [2, 2], "channel_mult": [1, 2],
        "transformer_depth": [1, 1, 1, 1], "transformer_depth_output": [1, 1, 1, 1, 1, 1],
        "transformer_depth_middle": 1, "use_linear_in_transformer": False, "context_dim": CONTEXT_DIM,
    }),
    # SD2.x: linear proj_in/out, heads by channel count, fp32 attention, v-prediction.
    "sd2": (comfy.supported_models.SD20, comfy.model_base.ModelType.V_PREDICTION, {
        "adm_in_channels": None, "num_res_blocks": [1, 1], "channel_mult": [1, 2],
        "transformer_depth": [1, 1], "transformer_depth_output": [1, 1, 1, 1], "transformer_depth_middle": 1,
        "use_linear_in_transformer": True, "context_dim": CONTEXT_DIM,
    }),
    # SD1.5's four levels (two ResNets each, no attention at the deepest), where AnimateDiff's SD1.5 motion modules
    # fit: 8 down and 12 up sites plus the middle block.
    "sd15": (comfy.supported_models.SD15, comfy.model_base.ModelType.EPS, {
        "adm_in_channels": None, "num_res_blocks": [2, 2, 2, 2], "channel_mult": [1, 1, 2, 2],
        "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0], "transformer_depth_middle": 1,
        "transformer_depth_output": [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0],
        "use_linear_in_transformer": False, "context_dim": CONTEXT_DIM,
    }),
    # SDXL: no transformer at the top level, depth-2 transformers, ADM (pooled text + sizes) input.
    "sdxl": (comfy.supported_models.SDXL, comfy.model_base.ModelType.EPS, {
        "adm_in_channels": 2816, "num_classes": "sequential", "num_res_blocks": [1, 1, 1], "channel_mult": [1, 2, 2],
        "transformer_depth": [0, 2, 2], "transformer_depth_output": [0, 0, 2, 2, 2, 2], "transformer_depth_middle": 2,
        "use_linear_in_transformer": True, "context_dim": CONTEXT_DIM,
    }),
}


# The real SD1.5 and SDXL UNet architectures (seeded random weights: speed and memory do not depend on values).
FULL_UNET_KINDS = {
    "sd15": (comfy.supported_models.SD15, comfy.model_base.ModelType.EPS, {
        "model_channels": 320, "adm_in_channels": None, "num_res_blocks": [2, 2, 2, 2], "channel_mult": [1, 2, 4, 4],
        "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0], "transformer_depth_middle": 1,
        "transformer_depth_output": [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0],
        "use_linear_in_transformer": False, "context_dim": 768,
    }),
    # SD1.5's exact structure at a tenth of its width: the CPU stand-in for side-by-sides with the reference.
    "sd15_mini": (comfy.supported_models.SD15, comfy.model_base.ModelType.EPS, {
        "model_channels": 32, "adm_in_channels": None, "num_res_blocks": [2, 2, 2, 2], "channel_mult": [1, 2, 4, 4],
        "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0], "transformer_depth_middle": 1,
        "transformer_depth_output": [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0],
        "use_linear_in_transformer": False, "context_dim": 64,
    }),
    "sdxl": (comfy.supported_models.SDXL, comfy.model_base.ModelType.EPS, {
        "model_channels": 320, "adm_in_channels": 2816, "num_classes": "sequential", "num_res_blocks": [2, 2, 2],
        "channel_mult": [1, 2, 4], "transformer_depth": [0, 0, 2, 2, 10, 10], "transformer_depth_middle": 10,
        "transformer_depth_output": [0, 0, 0, 2, 2, 2, 10, 10, 10], "use_linear_in_transformer": True,
        "context_dim": 2048,
    }),
}


@torch.no_grad()
def fill_seeded(module: torch.nn.Module, seed: int) -> None:
    """Deterministic, well-scaled random weights (ComfyUI's layers are created uninitialised)."""
    generator = torch.Generator().manual_seed(seed)
    for name, param in sorted(module.named_parameters(), key=lambda item: item[0]):
        if param.ndim >= 2:
            fan_in = math.prod(param.shape[1:])
            values = torch.randn(param.shape, generator=generator) / math.sqrt(fan_in)
        elif name.endswith("weight"):
            values = 1.0 + 0.1 * torch.randn(param.shape, generator=generator)
        else:
            values = 0.1 * torch.randn(param.shape, generator=generator)
        param.copy_(values.to(param.dtype))


def tiny_unet(kind: str = "sd1", seed: int = 0, dtype: torch.dtype = torch.float32) -> comfy.model_patcher.ModelPatcher:
    config_class, model_type, extra = UNET_KINDS[kind]
    model_config = config_class({**_UNET_BASE, **extra})
    if model_config.unet_config["num_head_channels"] > 0:
        model_config.unet_config["num_head_channels"] = HEAD_CHANNELS  # SD2/SDXL's 64 would leave no head here
    return _build(model_config, model_type, seed, dtype)


def full_unet(kind: str, seed: int = 0, dtype: torch.dtype = torch.float16) -> comfy.model_patcher.ModelPatcher:
    """The real SD1.5 / SDXL UNet architecture with seeded random weights (for benchmarks)."""
    config_class, model_type, extra = FULL_UNET_KINDS[kind]
    return _build(config_class({**_UNET_BASE, **extra}), model_type, seed, dtype)


def _build(model_config, model_type, seed: int, dtype: torch.dtype) -> comfy.model_patcher.ModelPatcher:
    model_config.set_inference_dtype(dtype, None)
    if isinstance(model_config, comfy.supported_models.SDXL):
        model = comfy.model_base.SDXL(model_config, model_type=model_type)
    else:
        model = comfy.model_base.BaseModel(model_config, model_type=model_type)
    fill_seeded(model.diffusion_model, seed)
    return comfy.model_patcher.ModelPatcher(
        model,
        load_device=comfy.model_management.get_torch_device(),
        offload_device=comfy.model_management.unet_offload_device(),
    )


TINY_CLIP_CONFIG = {
    "hidden_size": CONTEXT_DIM, "intermediate_size": 64, "num_attention_heads": 2, "num_hidden_layers": 2,
}


def tiny_clip(seed: int = 0) -> comfy.sd.CLIP:
    """A 2-layer CLIP text model through comfy.sd.CLIP with the stock SD1 tokenizer."""
    target = comfy.supported_models_base.ClipTarget(comfy.sd1_clip.SD1Tokenizer, comfy.sd1_clip.SD1ClipModel)
    clip = comfy.sd.CLIP(target, model_options={"clip_l_model_config": TINY_CLIP_CONFIG})
    fill_seeded(clip.cond_stage_model, seed)
    return clip


def text_cond(kind: str, seed: int, tokens: int = 77) -> list:
    """A CONDITIONING as CLIPTextEncode builds it, with random embeddings (and SDXL's pooled output)."""
    generator = torch.Generator().manual_seed(seed)
    embedding = torch.randn(1, tokens, CONTEXT_DIM, generator=generator)
    extras = {}
    if kind == "sdxl":
        extras["pooled_output"] = torch.randn(1, 1280, generator=generator)
    return [[embedding, extras]]


TINY_VAE_CONFIG = {
    "embed_dim": 4,
    "ddconfig": {
        "double_z": True, "z_channels": 4, "resolution": 64, "in_channels": 3, "out_ch": 3, "ch": 32,
        "ch_mult": [1, 1, 1, 1], "num_res_blocks": 1, "attn_resolutions": [], "dropout": 0.0,
    },
}


def tiny_vae(seed: int = 0) -> comfy.sd.VAE:
    """An SD-style KL autoencoder (8x down, 4 latent channels) through comfy.sd.VAE, seeded random weights."""
    vae = comfy.sd.VAE(sd={}, config={"params": TINY_VAE_CONFIG})
    fill_seeded(vae.first_stage_model, seed)
    return vae


def tiny_controlnet(kind: str = "sd1", seed: int = 0) -> comfy.controlnet.ControlNet:
    """A ControlNet (comfy.cldm) matching the tiny UNet of `kind`, as comfy.controlnet loads one."""
    config_class, _, extra = UNET_KINDS[kind]
    model_config = config_class({**_UNET_BASE, **extra})
    if model_config.unet_config["num_head_channels"] > 0:
        model_config.unet_config["num_head_channels"] = HEAD_CHANNELS
    config = dict(model_config.unet_config)
    config.pop("out_channels")
    config.update(hint_channels=3, dtype=torch.float32, device=torch.device("cpu"),
                  operations=comfy.ops.disable_weight_init)
    control_model = comfy.cldm.cldm.ControlNet(**config)
    fill_seeded(control_model, seed)
    return comfy.controlnet.ControlNet(control_model, load_device=comfy.model_management.get_torch_device())


def tiny_t2i_adapter(seed: int = 0) -> comfy.controlnet.T2IAdapter:
    """An SD1-style T2I-Adapter (8x pixel-unshuffle) for the tiny sd1 UNet's two levels."""
    adapter = comfy.t2i_adapter.adapter.Adapter(
        channels=[32, 64], nums_rb=2, cin=3 * 64, ksize=1, sk=True, use_conv=False, xl=False
    )
    fill_seeded(adapter, seed)
    return comfy.controlnet.T2IAdapter(adapter, channels_in=3, compression_ratio=8, upscale_algorithm="nearest-exact")
