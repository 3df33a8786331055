"""Seeded AnimateDiff-family motion-module and motion-LoRA state dicts in the released files' key layouts.

Layouts (as the released files hold them, no prefix; read from guoyww/AnimateDiff's motion_module.py,
unet.py, unet_blocks.py and configs, hotshotco/Hotshot-XL's transformer_temporal.py / unet_blocks.py,
G-U-N/AnimateLCM's configs and Kosinkadink/ComfyUI-AnimateDiff-Evolved's motion_module_ad.py):

- AnimateDiff (v1, v2, v3, sdxl) and AnimateLCM: ``{down_blocks.i | up_blocks.i}.motion_modules.j.`` or
  ``mid_block.motion_modules.0.``, then ``temporal_transformer.`` and
  ``norm`` (GroupNorm 32, eps 1e-6), ``proj_in`` (Linear C->C), ``transformer_blocks.0.attention_blocks.{0,1}.``
  ``{to_q,to_k,to_v}.weight`` (no bias), ``to_out.0.{weight,bias}``, ``pos_encoder.pe`` ([1, L, C]; absent in
  AnimateLCM files), ``transformer_blocks.0.norms.{0,1}`` (LayerNorm), ``transformer_blocks.0.ff.net.0.proj``
  (GEGLU, C -> 2*4C), ``transformer_blocks.0.ff.net.2`` (4C -> C), ``transformer_blocks.0.ff_norm``, ``proj_out``.
- HotshotXL (hsxl_temporal_layers): ``{down_blocks.i | up_blocks.i}.temporal_attentions.j.`` directly followed
  by the same names, with the table called ``pos_encoder.positional_encoding`` ([1, 24, C]); no mid block.

Module placement follows the ComfyUI UNet it is built for: one module per ResBlock-carrying input block
(down level i: as many as the level's ResBlocks), one per ResBlock-carrying output block (up level i, which
mirrors down level n-1-i), plus one in the middle block where the version has it (v2 and AnimateLCM).
"""

from __future__ import annotations

import math
import re

import torch
from comfy.ldm.modules.diffusionmodules.openaimodel import Downsample, ResBlock, Upsample

MOTION_VERSIONS = ("v1", "v2", "v3", "animatelcm", "sdxl", "hotshotxl")

HEADS = 8  # every released AnimateDiff-family motion module: num_attention_heads 8, head dim C/8
FF_MULT = 4  # diffusers FeedForward's default mult, GEGLU
ANIMATELCM_TABLE_LENGTH = 64  # built-in table of files without pos_encoder keys (AnimateLCM's own code, AD-Evolved)


# version -> (position-table length or None for no table keys, has a mid-block module, HotshotXL naming)
VERSION_LAYOUT = {
    "v1": (24, False, False),  # mm_sd_v14 / mm_sd_v15: training config max_len 24, motion_module_mid_block false
    "v2": (32, True, False),  # mm_sd_v15_v2: L=32, motion_module_mid_block true
    "v3": (32, False, False),  # v3_sd15_mm: L=32, no mid block
    "animatelcm": (None, True, False),  # AnimateLCM t2v config: motion_module_mid_block true, no pe saved
    "sdxl": (32, False, False),  # mm_sdxl_v10_beta: sdxl branch config max_len 32, no mid block
    "hotshotxl": (24, False, True),  # Hotshot-XL PositionalEncoding default max_length 24, no temporal mid block
}


def sinusoid_table(length: int, channels: int) -> torch.Tensor:
    """The [1, length, channels] table: sin on even channels, cos on odd, frequencies 10000^(-2i/channels).

    Computed the way the released files' tables were (float32 torch ops), so the values match them."""
    position = torch.arange(length, dtype=torch.float32).unsqueeze(1)
    frequency = torch.exp(torch.arange(0, channels, 2, dtype=torch.float32) * (-math.log(10000.0) / channels))
    table = torch.zeros(1, length, channels)
    table[0, :, 0::2] = torch.sin(position * frequency)
    table[0, :, 1::2] = torch.cos(position * frequency)
    return table


def motion_module_sites(unet) -> dict[str, list[int]]:
    """Channels of each motion module's site, read from the ComfyUI UNet's blocks.

    Returns {"down": [[C, ...] per level], "up": [[C, ...] per level], "mid": [C]} (channels per site)."""
    down: list[list[int]] = [[]]
    for block in unet.input_blocks:
        if any(isinstance(layer, Downsample) for layer in block):
            down.append([])
        resblocks = [layer for layer in block if isinstance(layer, ResBlock)]
        if resblocks:
            down[-1].append(resblocks[-1].out_channels)
    up: list[list[int]] = [[]]
    for block in unet.output_blocks:
        resblocks = [layer for layer in block if isinstance(layer, ResBlock)]
        if resblocks:
            up[-1].append(resblocks[-1].out_channels)
        if any(isinstance(layer, Upsample) for layer in block):
            up.append([])
    mid = []
    if unet.middle_block is not None:
        mid_res = [layer for layer in unet.middle_block if isinstance(layer, ResBlock)]
        if mid_res:
            mid.append(mid_res[0].out_channels)
    return {"down": [level for level in down if level], "up": [level for level in up if level], "mid": mid}


def _module_shapes(channels: int, table_length: int | None, hotshot: bool) -> dict[str, tuple[int, ...]]:
    """Relative key -> shape of one temporal transformer (one transformer block, two attention blocks)."""
    inner = FF_MULT * channels
    shapes: dict[str, tuple[int, ...]] = {
        "norm.weight": (channels,),
        "norm.bias": (channels,),
        "proj_in.weight": (channels, channels),
        "proj_in.bias": (channels,),
        "proj_out.weight": (channels, channels),
        "proj_out.bias": (channels,),
    }
    block = "transformer_blocks.0."
    for index in range(2):
        attention = f"{block}attention_blocks.{index}."
        for name in ("to_q", "to_k", "to_v"):
            shapes[f"{attention}{name}.weight"] = (channels, channels)
        shapes[f"{attention}to_out.0.weight"] = (channels, channels)
        shapes[f"{attention}to_out.0.bias"] = (channels,)
        if table_length is not None:
            table = "pos_encoder.positional_encoding" if hotshot else "pos_encoder.pe"
            shapes[f"{attention}{table}"] = (1, table_length, channels)
        shapes[f"{block}norms.{index}.weight"] = (channels,)
        shapes[f"{block}norms.{index}.bias"] = (channels,)
    shapes[f"{block}ff.net.0.proj.weight"] = (2 * inner, channels)
    shapes[f"{block}ff.net.0.proj.bias"] = (2 * inner,)
    shapes[f"{block}ff.net.2.weight"] = (channels, inner)
    shapes[f"{block}ff.net.2.bias"] = (channels,)
    shapes[f"{block}ff_norm.weight"] = (channels,)
    shapes[f"{block}ff_norm.bias"] = (channels,)
    return shapes


def module_prefix(kind: str, level: int | None, index: int, hotshot: bool) -> str:
    """Key prefix of one motion module: kind is "down", "up" or "mid"."""
    if kind == "mid":
        return f"mid_block.motion_modules.{index}.temporal_transformer."
    blocks = "down_blocks" if kind == "down" else "up_blocks"
    if hotshot:
        return f"{blocks}.{level}.temporal_attentions.{index}."
    return f"{blocks}.{level}.motion_modules.{index}.temporal_transformer."


def motion_module_shapes(unet, version: str) -> dict[str, tuple[int, ...]]:
    """Every key of a `version` motion module for this ComfyUI UNet, with its shape."""
    if version not in VERSION_LAYOUT:
        raise ValueError(f"unknown motion-module version {version!r}; expected one of {MOTION_VERSIONS}")
    table_length, has_mid, hotshot = VERSION_LAYOUT[version]
    sites = motion_module_sites(unet)
    shapes: dict[str, tuple[int, ...]] = {}
    for kind in ("down", "up"):
        for level, channel_list in enumerate(sites[kind]):
            for index, channels in enumerate(channel_list):
                prefix = module_prefix(kind, level, index, hotshot)
                for key, shape in _module_shapes(channels, table_length, hotshot).items():
                    shapes[prefix + key] = shape
    if has_mid:
        if not sites["mid"]:
            raise ValueError(f"a {version} motion module needs a middle block, and this UNet has none")
        prefix = module_prefix("mid", None, 0, hotshot)
        for key, shape in _module_shapes(sites["mid"][0], table_length, hotshot).items():
            shapes[prefix + key] = shape
    return shapes


def _seeded_tensor(key: str, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    if len(shape) >= 2:
        return torch.randn(shape, generator=generator) / math.sqrt(math.prod(shape[1:]))
    if key.endswith("weight"):
        return 1.0 + 0.1 * torch.randn(shape, generator=generator)
    return 0.1 * torch.randn(shape, generator=generator)


def seeded_motion_module(unet, version: str, seed: int, zero_output: bool = False) -> dict[str, torch.Tensor]:
    """A float32 motion-module state dict of `version`, laid out as its released file, for this ComfyUI UNet.

    Matrices randn/sqrt(fan_in), norm weights 1+0.1*randn, biases 0.1*randn (deterministic from `seed`, in
    sorted key order), position tables the true sinusoid; zero_output zeroes every proj_out (as AnimateDiff
    initialises them), which makes each module the identity."""
    generator = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    for key, shape in sorted(motion_module_shapes(unet, version).items()):
        if key.endswith((".pos_encoder.pe", ".pos_encoder.positional_encoding")):
            state[key] = sinusoid_table(shape[1], shape[2])
        elif zero_output and ".proj_out." in key:
            state[key] = torch.zeros(shape)
        else:
            state[key] = _seeded_tensor(key, shape, generator).float()
    return state


_HOTSHOT_MODULE = re.compile(r"\.temporal_attentions\.(\d+)\.")


def hotshot_to_animatediff(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """HotshotXL keys renamed to AnimateDiff's, as AnimateDiff-Evolved converts them (same tensors).

    temporal_attentions.N. -> motion_modules.N.temporal_transformer.; pos_encoder.positional_encoding ->
    pos_encoder.pe."""
    converted = {}
    for key, value in state.items():
        new_key = _HOTSHOT_MODULE.sub(lambda m: f".motion_modules.{m.group(1)}.temporal_transformer.", key, count=1)
        new_key = new_key.replace("pos_encoder.positional_encoding", "pos_encoder.pe")
        converted[new_key] = value
    return converted


_ATTENTION_Q = re.compile(r"^(.*\.attention_blocks\.\d+)\.to_q\.weight$")
_LORA_TARGETS = (
    ("to_q", "to_q.weight"),
    ("to_k", "to_k.weight"),
    ("to_v", "to_v.weight"),
    ("to_out", "to_out.0.weight"),
)


def seeded_motion_lora(module_state_dict: dict[str, torch.Tensor], rank: int, seed: int) -> dict[str, torch.Tensor]:
    """A motion LoRA in AnimateDiff v2's released layout for every attention block of the module.

    Keys ``<...attention_blocks.N>.processor.{to_q,to_k,to_v,to_out}_lora.{down,up}.weight``; down is
    (rank, in), up is (out, rank); no alpha key (AnimateDiff adds strength * up @ down to the weight).
    A HotshotXL module gets AnimateDiff naming (AnimateDiff-Evolved applies LoRAs after converting it)."""
    names = hotshot_to_animatediff(module_state_dict)
    attention_blocks = sorted(match.group(1) for key in names if (match := _ATTENTION_Q.match(key)))
    generator = torch.Generator().manual_seed(seed)
    lora: dict[str, torch.Tensor] = {}
    for block in attention_blocks:
        for lora_name, weight_name in _LORA_TARGETS:
            out_features, in_features = names[f"{block}.{weight_name}"].shape
            down = torch.randn(rank, in_features, generator=generator) / math.sqrt(in_features)
            up = torch.randn(out_features, rank, generator=generator) / math.sqrt(rank)
            lora[f"{block}.processor.{lora_name}_lora.down.weight"] = down
            lora[f"{block}.processor.{lora_name}_lora.up.weight"] = up
    return lora


def merge_motion_lora(
    module_state_dict: dict[str, torch.Tensor], lora: dict[str, torch.Tensor], strength: float = 1.0
) -> dict[str, torch.Tensor]:
    """The module with the LoRA merged as AnimateDiff's load_diffusers_lora does: W += strength * up @ down.

    The LoRA key maps to the module key by dropping "processor.", "_lora" and "down."/"up.", with
    "to_out." becoming "to_out.0." (no rank or alpha scaling). Keys of a HotshotXL module stay HotshotXL's."""
    hotshot = any(".temporal_attentions." in key for key in module_state_dict)
    merged = {key: value.clone() for key, value in module_state_dict.items()}
    by_ad_name = {}
    for key in module_state_dict:
        by_ad_name[next(iter(hotshot_to_animatediff({key: None})))] = key
    for key, down in lora.items():
        if ".down." not in key:
            continue
        up = lora[key.replace(".down.", ".up.")]
        target = key.replace("processor.", "").replace("_lora", "").replace("down.", "")
        target = target.replace("to_out.", "to_out.0.")
        target = by_ad_name[target] if hotshot else target
        if target not in merged:
            raise KeyError(f"LoRA key {key} has no weight {target} in the module")
        merged[target] = merged[target] + strength * (up.float() @ down.float()).to(merged[target].dtype)
    return merged
