"""The original Tune-A-Video checkpoint layout (showlab/Tune-A-Video, diffusers 0.11.1): its unet/config.json in
ComfyUI's terms and back, and the names of its temporal layers.

Its UNet3DConditionModel is Stable Diffusion's UNet with 2-D weights under diffusers' keys, plus, in every
transformer block, `attn_temp` (to_q/to_k/to_v without bias, to_out.0 with bias) and its pre-norm `norm_temp`.
It runs sparse-causal attention, pools ResNet GroupNorm statistics over the frames of a video and has no
temporal position encoding.
"""

import json
from pathlib import Path

from .inflation_config import AttentionMode, GroupNormMode, InflationConfig, PositionEncoding

REFERENCE_INFLATION = InflationConfig(
    attention=AttentionMode.SPARSE_CAUSAL,
    temporal_layers=True,
    temporal_position_encoding=PositionEncoding.NONE,
    groupnorm=GroupNormMode.PER_VIDEO,
)
CONFIG_NAME = "config.json"
WEIGHTS_NAMES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
CLASS_NAMES = ("UNet3DConditionModel", "UNet2DConditionModel")
DIFFUSERS_VERSION = "0.11.1"  # the version the reference pins

# Reference temporal key (after "<block>.") -> the pack's TemporalAttention state key.
TEMPORAL_KEYS = {
    "attn_temp.to_q.weight": "to_q.weight",
    "attn_temp.to_k.weight": "to_k.weight",
    "attn_temp.to_v.weight": "to_v.weight",
    "attn_temp.to_out.0.weight": "to_out.weight",
    "attn_temp.to_out.0.bias": "to_out.bias",
    "norm_temp.weight": "norm.weight",
    "norm_temp.bias": "norm.bias",
}

DOWN_BLOCKS = {"CrossAttnDownBlock3D": 1, "DownBlock3D": 0, "CrossAttnDownBlock2D": 1, "DownBlock2D": 0}
UP_BLOCKS = {"CrossAttnUpBlock3D": 1, "UpBlock3D": 0, "CrossAttnUpBlock2D": 1, "UpBlock2D": 0}
MID_BLOCKS = ("UNetMidBlock3DCrossAttn", "UNetMidBlock2DCrossAttn")
REQUIRED = (
    "in_channels", "out_channels", "block_out_channels", "layers_per_block", "down_block_types", "up_block_types",
    "cross_attention_dim", "attention_head_dim",
)
# What Stable Diffusion's UNet has, where a config may say otherwise (absent fields take these values).
SD_VALUES = {
    "mid_block_type": "UNetMidBlock3DCrossAttn",
    "act_fn": "silu",
    "norm_num_groups": 32,
    "norm_eps": 1e-5,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "center_input_sample": False,
    "downsample_padding": 1,
    "mid_block_scale_factor": 1,
    "dual_cross_attention": False,
    "only_cross_attention": False,
    "class_embed_type": None,
    "num_class_embeds": None,
    "resnet_time_scale_shift": "default",
    # fields of later diffusers versions, at their SD values
    "addition_embed_type": None,
    "encoder_hid_dim": None,
    "num_attention_heads": None,
    "transformer_layers_per_block": 1,
    "time_embedding_type": "positional",
    "conv_in_kernel": 3,
    "conv_out_kernel": 3,
}
# The fields of SD_VALUES the reference's UNet3DConditionModel.__init__ takes (later diffusers' are left out).
REFERENCE_INIT_FIELDS = (
    "mid_block_type", "act_fn", "norm_num_groups", "norm_eps", "flip_sin_to_cos", "freq_shift",
    "center_input_sample", "downsample_padding", "mid_block_scale_factor", "dual_cross_attention",
    "only_cross_attention", "class_embed_type", "num_class_embeds", "resnet_time_scale_shift",
)
# The fields of a ComfyUI unet_config that fix the UNet's structure (heads compared per level, see heads_per_level).
ARCHITECTURE_FIELDS = (
    "in_channels", "out_channels", "model_channels", "channel_mult", "num_res_blocks", "transformer_depth",
    "transformer_depth_output", "transformer_depth_middle", "context_dim", "use_linear_in_transformer",
    "adm_in_channels",
)


class ReferenceConfigError(ValueError):
    """A UNet config that is not a Stable Diffusion 1.x/2.x-shaped UNet; the message says what differs."""


def _heads(config: dict, levels: int, channels: list[int]) -> tuple[int, int]:
    """ComfyUI's (num_heads, num_head_channels) for diffusers' attention_head_dim (in 0.11, a head count)."""
    heads = config["attention_head_dim"]
    heads = [heads] * levels if isinstance(heads, int) else heads
    if not (isinstance(heads, list) and len(heads) == levels and all(isinstance(h, int) and h > 0 for h in heads)):
        raise ReferenceConfigError(f"attention_head_dim {config['attention_head_dim']!r} is no head count per level")
    if len(set(heads)) == 1:
        return heads[0], -1
    widths = {channel // count for channel, count in zip(channels, heads, strict=True)}
    if len(widths) != 1 or any(channel % count for channel, count in zip(channels, heads, strict=True)):
        raise ReferenceConfigError(f"attention_head_dim {heads} gives heads of different widths per level")
    return -1, widths.pop()


def read_config(weights_path: Path) -> dict:
    """The config.json beside a checkpoint's weights file (diffusers keeps the two in one folder)."""
    path = weights_path.with_name(CONFIG_NAME)
    if not path.is_file():
        raise ReferenceConfigError(
            f"there is no {CONFIG_NAME} beside it in {path.parent}: a diffusers UNet folder holds both (copy the "
            "checkpoint's unet/ folder whole)"
        )
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as error:
        raise ReferenceConfigError(f"its {CONFIG_NAME} is no readable JSON ({error})") from error


def unet_config_from_diffusers(config: dict) -> dict:
    """The ComfyUI unet_config of a diffusers UNet config.json; anything not SD-shaped is a ReferenceConfigError."""
    if not isinstance(config, dict) or config.get("_class_name") not in CLASS_NAMES:
        found = config.get("_class_name") if isinstance(config, dict) else type(config).__name__
        raise ReferenceConfigError(f"it describes {found!r}, not a {' or '.join(CLASS_NAMES)}")
    missing = [field for field in REQUIRED if field not in config]
    if missing:
        raise ReferenceConfigError(f"it lacks {', '.join(missing)}")
    differing = [
        f"{field} {config[field]!r} (Stable Diffusion's: {value!r})"
        for field, value in SD_VALUES.items()
        if field in config and config[field] != value
        and not (field == "mid_block_type" and config[field] in MID_BLOCKS)
    ]
    if differing:
        raise ReferenceConfigError(f"it is no Stable Diffusion 1.x/2.x UNet: {'; '.join(differing)}")
    channels, layers = config["block_out_channels"], config["layers_per_block"]
    down, up = config["down_block_types"], config["up_block_types"]
    levels = len(channels) if isinstance(channels, list) else 0
    if not (levels and all(isinstance(c, int) and c > 0 and c % channels[0] == 0 for c in channels)):
        raise ReferenceConfigError(f"block_out_channels {channels!r} are not multiples of a base width")
    if not (isinstance(layers, int) and layers > 0):
        raise ReferenceConfigError(f"layers_per_block {layers!r} is no positive count")
    unknown = [t for t in down if t not in DOWN_BLOCKS] + [t for t in up if t not in UP_BLOCKS]
    if unknown or len(down) != levels or len(up) != levels:
        raise ReferenceConfigError(
            f"its block types ({down} down, {up} up) are not {levels} of {sorted(DOWN_BLOCKS)} and "
            f"{sorted(UP_BLOCKS)}"
        )
    num_heads, num_head_channels = _heads(config, levels, channels)
    return {
        "in_channels": config["in_channels"],
        "out_channels": config["out_channels"],
        "model_channels": channels[0],
        "channel_mult": [c // channels[0] for c in channels],
        "num_res_blocks": [layers] * levels,
        "transformer_depth": [DOWN_BLOCKS[t] for t in down for _ in range(layers)],
        # ComfyUI lists the decoder's depths from the top level down; diffusers' up blocks start at the bottom.
        "transformer_depth_output": [UP_BLOCKS[t] for t in reversed(up) for _ in range(layers + 1)],
        "transformer_depth_middle": 1,
        "context_dim": config["cross_attention_dim"],
        "use_linear_in_transformer": bool(config.get("use_linear_projection", False)),
        "adm_in_channels": None,
        "num_heads": num_heads,
        "num_head_channels": num_head_channels,
    }


def heads_per_level(unet_config: dict) -> list[int]:
    """Attention heads at each level (ComfyUI gives either a count or a width per head)."""
    widths = [unet_config["model_channels"] * mult for mult in unet_config["channel_mult"]]
    if unet_config.get("num_heads", -1) > 0:
        return [unet_config["num_heads"]] * len(widths)
    return [width // unet_config["num_head_channels"] for width in widths]


def architecture_differences(expected: dict, found: dict) -> list[str]:
    """Where two unet_configs describe different UNets, field by field."""
    differences = [
        f"{field} {found.get(field)!r} vs {expected.get(field)!r}"
        for field in ARCHITECTURE_FIELDS
        if _plain(found.get(field)) != _plain(expected.get(field))
    ]
    if heads_per_level(found) != heads_per_level(expected):
        differences.append(f"heads per level {heads_per_level(found)} vs {heads_per_level(expected)}")
    return differences


def _plain(value):
    return list(value) if isinstance(value, (list, tuple)) else value


def diffusers_config(unet_config: dict, sample_size: int, upcast_attention: bool) -> dict:
    """config.json of the reference's UNet3DConditionModel for a ComfyUI unet_config, as diffusers writes it.

    A UNet the reference cannot build (SDXL's deeper transformers and extra inputs, uneven levels) is a
    ReferenceConfigError."""
    layers = unet_config["num_res_blocks"][0]
    down_depths = unet_config["transformer_depth"][::layers] if layers else []
    up_depths = list(reversed(unet_config["transformer_depth_output"][:: layers + 1])) if layers else []
    channels = [unet_config["model_channels"] * mult for mult in unet_config["channel_mult"]]
    num_heads = unet_config.get("num_heads", -1)
    config = {
        "_class_name": CLASS_NAMES[0],
        "_diffusers_version": DIFFUSERS_VERSION,
        **{field: value for field, value in SD_VALUES.items() if field in REFERENCE_INIT_FIELDS},
        "attention_head_dim": num_heads if num_heads > 0 else heads_per_level(unet_config),
        "block_out_channels": channels,
        "cross_attention_dim": unet_config["context_dim"],
        "down_block_types": ["CrossAttnDownBlock3D" if d else "DownBlock3D" for d in down_depths],
        "in_channels": unet_config["in_channels"],
        "layers_per_block": layers,
        "out_channels": unet_config["out_channels"],
        "sample_size": sample_size,
        "up_block_types": ["CrossAttnUpBlock3D" if d else "UpBlock3D" for d in up_depths],
        "upcast_attention": upcast_attention,
        "use_linear_projection": bool(unet_config.get("use_linear_in_transformer", False)),
    }
    rebuilt = unet_config_from_diffusers(config) if layers and up_depths else {}
    differences = architecture_differences(unet_config, rebuilt) if rebuilt else ["no levels"]
    if differences:
        raise ReferenceConfigError(
            f"the reference's UNet3DConditionModel cannot hold this UNet ({'; '.join(differences[:3])})"
        )
    return dict(sorted(config.items()))

