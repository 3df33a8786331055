"""An independent reference of what AnimateDiff's UNet3DConditionModel computes, on a ComfyUI image UNet.

Written from guoyww/AnimateDiff (animatediff/models/unet.py, unet_blocks.py, resnet.py, motion_module.py,
attention.py; the sdxl branch for mm_sdxl_v10_beta), hotshotco/Hotshot-XL (transformer_temporal.py,
unet_blocks.py) and diffusers 0.11.1 (CrossAttention, FeedForward/GEGLU, the versions AnimateDiff pins), as
plain torch ops on the raw motion-module state dict. The image UNet's spatial attention, Downsample and
Upsample are ComfyUI's own module forwards (per frame, as in AnimateDiff, whose Transformer3DModel folds
frames into the batch); the ResBlocks and the final norm are written out here so that their GroupNorms can
pool statistics over a video's frames, as AnimateDiff v1's non-inflated nn.GroupNorm on (b, c, f, h, w) does.

Nothing here comes from the pack's tav_core/ or comfy_glue/.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from comfy.ldm.modules.attention import SpatialTransformer
from comfy.ldm.modules.diffusionmodules.openaimodel import Downsample, ResBlock, Upsample

from tav_dev.motion_module_files import ANIMATELCM_TABLE_LENGTH, HEADS, sinusoid_table

MOTION_GROUPNORM_EPS = 1e-6  # TemporalTransformer3DModel.norm: GroupNorm(32, C, eps=1e-6)
MOTION_GROUPNORM_GROUPS = 32
LAYERNORM_EPS = 1e-5  # nn.LayerNorm(dim) defaults for norms.N and ff_norm


# ---------------------------------------------------------------------------------------------------------
# Motion module (TemporalTransformer3DModel) from raw weights
# ---------------------------------------------------------------------------------------------------------


class MotionWeights:
    """Looks up one motion module's tensors in the raw state dict (AnimateDiff or HotshotXL naming)."""

    def __init__(self, state: dict[str, torch.Tensor], prefix: str, hotshot: bool, used: set[str]):
        self.state, self.prefix, self.hotshot, self.used = state, prefix, hotshot, used

    def has(self, name: str) -> bool:
        return self.prefix + name in self.state

    def get(self, name: str, like: torch.Tensor) -> torch.Tensor:
        key = self.prefix + name
        self.used.add(key)
        return self.state[key].to(device=like.device, dtype=like.dtype)

    def table_name(self, attention: str) -> str:
        return f"{attention}pos_encoder.positional_encoding" if self.hotshot else f"{attention}pos_encoder.pe"


def _linear(weights: MotionWeights, name: str, x: torch.Tensor, bias: bool = True) -> torch.Tensor:
    out = x @ weights.get(f"{name}.weight", x).t()
    if bias:
        out = out + weights.get(f"{name}.bias", x)
    return out


def _layer_norm(weights: MotionWeights, name: str, x: torch.Tensor) -> torch.Tensor:
    mean = x.mean(dim=-1, keepdim=True)
    var = x.var(dim=-1, unbiased=False, keepdim=True)
    return (x - mean) / torch.sqrt(var + LAYERNORM_EPS) * weights.get(f"{name}.weight", x) + weights.get(
        f"{name}.bias", x
    )


def _group_norm(x: torch.Tensor, groups: int, weight: torch.Tensor, bias: torch.Tensor, eps: float) -> torch.Tensor:
    """GroupNorm over all dims after the channel one (so a (b, c, f, h, w) input pools its frames)."""
    shape = x.shape
    grouped = x.reshape(shape[0], groups, -1)
    mean = grouped.mean(dim=-1, keepdim=True)
    var = grouped.var(dim=-1, unbiased=False, keepdim=True)
    normed = ((grouped - mean) / torch.sqrt(var + eps)).reshape(shape)
    view = (1, shape[1]) + (1,) * (len(shape) - 2)
    return normed * weight.reshape(view) + bias.reshape(view)


def _to_video(h: torch.Tensor, frames: int) -> torch.Tensor:
    """(v f) c h w -> v c f h w."""
    return h.reshape(-1, frames, *h.shape[1:]).transpose(1, 2)


def _from_video(h: torch.Tensor) -> torch.Tensor:
    """v c f h w -> (v f) c h w."""
    return h.transpose(1, 2).reshape(-1, h.shape[1], *h.shape[3:])


def temporal_self_attention(
    weights: MotionWeights, attention: str, tokens: torch.Tensor, frames: int, table: torch.Tensor | None
) -> torch.Tensor:
    """One VersatileAttention ("Temporal_Self") on LayerNorm'd tokens ((v f), hw, c) -> ((v f), hw, c).

    Tokens regroup to (v hw, f, c); the sinusoid table's first f rows are added (to the q/k/v input, after the
    LayerNorm); q, k, v projections without bias; 8 heads; softmax(q k^T * head_dim^-0.5) v; to_out with bias."""
    batch_frames, positions, channels = tokens.shape
    x = tokens.reshape(batch_frames // frames, frames, positions, channels).transpose(1, 2)
    x = x.reshape(-1, frames, channels)
    if table is not None:
        if frames > table.shape[1]:
            raise ValueError(f"{frames} frames, but the position table has only {table.shape[1]} rows")
        x = x + table[:, :frames].to(x)
    head_dim = channels // HEADS

    def heads(t: torch.Tensor) -> torch.Tensor:
        return t.reshape(t.shape[0], frames, HEADS, head_dim).transpose(1, 2)

    q = heads(_linear(weights, f"{attention}to_q", x, bias=False))
    k = heads(_linear(weights, f"{attention}to_k", x, bias=False))
    v = heads(_linear(weights, f"{attention}to_v", x, bias=False))
    scores = (q @ k.transpose(-1, -2)) * (head_dim**-0.5)
    out = scores.softmax(dim=-1) @ v
    out = out.transpose(1, 2).reshape(-1, frames, channels)
    out = _linear(weights, f"{attention}to_out.0", out)
    out = out.reshape(batch_frames // frames, positions, frames, channels).transpose(1, 2)
    return out.reshape(batch_frames, positions, channels)


def _geglu_feed_forward(weights: MotionWeights, block: str, x: torch.Tensor) -> torch.Tensor:
    projected = _linear(weights, f"{block}ff.net.0.proj", x)
    value, gate = projected.chunk(2, dim=-1)  # diffusers GEGLU: first half the value, second the gate
    return _linear(weights, f"{block}ff.net.2", value * F.gelu(gate))


def motion_module_forward(
    weights: MotionWeights, h: torch.Tensor, frames: int, groupnorm: str = "frame"
) -> torch.Tensor:
    """TemporalTransformer3DModel on (v f) c h w (AnimateDiff, AnimateLCM and HotshotXL share this math).

    groupnorm: "frame" (AnimateDiff main, AnimateLCM, HotshotXL, AnimateDiff-Evolved) or "video" (AnimateDiff's
    sdxl branch applies its GroupNorm to the 5-D tensor, pooling statistics over the video's frames)."""
    residual = h
    channels = h.shape[1]
    norm_weight, norm_bias = weights.get("norm.weight", h), weights.get("norm.bias", h)
    if groupnorm == "frame":
        normed = _group_norm(h, MOTION_GROUPNORM_GROUPS, norm_weight, norm_bias, MOTION_GROUPNORM_EPS)
    elif groupnorm == "video":
        normed = _from_video(
            _group_norm(_to_video(h, frames), MOTION_GROUPNORM_GROUPS, norm_weight, norm_bias, MOTION_GROUPNORM_EPS)
        )
    else:
        raise ValueError(f"groupnorm must be 'frame' or 'video', not {groupnorm!r}")
    batch_frames, _, height, width = h.shape
    tokens = normed.permute(0, 2, 3, 1).reshape(batch_frames, height * width, channels)
    tokens = _linear(weights, "proj_in", tokens)
    block_index = 0
    while weights.has(f"transformer_blocks.{block_index}.ff_norm.weight"):
        block = f"transformer_blocks.{block_index}."
        attention_index = 0
        while weights.has(f"{block}attention_blocks.{attention_index}.to_q.weight"):
            attention = f"{block}attention_blocks.{attention_index}."
            normed_tokens = _layer_norm(weights, f"{block}norms.{attention_index}", tokens)
            table_key = weights.table_name(attention)
            if weights.has(table_key):
                table = weights.get(table_key, tokens)
            else:  # AnimateLCM-style file: no table keys, the built-in 64-row sinusoid (AnimateLCM, AD-Evolved)
                table = sinusoid_table(ANIMATELCM_TABLE_LENGTH, channels).to(tokens)
            tokens = temporal_self_attention(weights, attention, normed_tokens, frames, table) + tokens
            attention_index += 1
        tokens = _geglu_feed_forward(weights, block, _layer_norm(weights, f"{block}ff_norm", tokens)) + tokens
        block_index += 1
    if block_index == 0:
        raise ValueError(f"no transformer block under {weights.prefix}")
    out = _linear(weights, "proj_out", tokens)
    out = out.reshape(batch_frames, height, width, channels).permute(0, 3, 1, 2)
    return out + residual


# ---------------------------------------------------------------------------------------------------------
# The 3D UNet walked over ComfyUI's UNetModel
# ---------------------------------------------------------------------------------------------------------


class _Run:
    def __init__(self, state, frames: int, pooled: bool, motion_groupnorm: str):
        self.state = state
        self.frames = frames
        self.pooled = pooled  # non-inflated ResNet / final GroupNorms: statistics over the video's frames
        self.motion_groupnorm = motion_groupnorm
        self.hotshot = any(".temporal_attentions." in key for key in state)
        self.used: set[str] = set()

    def motion(self, kind: str, level: int | None, index: int, h: torch.Tensor) -> torch.Tensor:
        if kind == "mid":
            prefix = f"mid_block.motion_modules.{index}.temporal_transformer."
        else:
            blocks = "down_blocks" if kind == "down" else "up_blocks"
            naming = (
                f"temporal_attentions.{index}." if self.hotshot else f"motion_modules.{index}.temporal_transformer."
            )
            prefix = f"{blocks}.{level}.{naming}"
        weights = MotionWeights(self.state, prefix, self.hotshot, self.used)
        if not weights.has("norm.weight"):
            return h  # no module at this site in the file
        return motion_module_forward(weights, h, self.frames, self.motion_groupnorm)

    def group_norm(self, norm, h: torch.Tensor) -> torch.Tensor:
        weight, bias = norm.weight.to(h), norm.bias.to(h)
        if self.pooled:
            return _from_video(_group_norm(_to_video(h, self.frames), norm.num_groups, weight, bias, norm.eps))
        return _group_norm(h, norm.num_groups, weight, bias, norm.eps)

    def resblock(self, block: ResBlock, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """ResnetBlock3D: norm1, SiLU, conv1, + time_emb_proj(SiLU(temb)), norm2, SiLU, conv2, + shortcut."""
        if block.updown or block.use_scale_shift_norm or block.skip_t_emb or block.exchange_temb_dims:
            raise NotImplementedError("ResBlock variant outside SD1.x/SD2.x/SDXL")
        h = F.silu(self.group_norm(block.in_layers[0], x))
        h = _conv(block.in_layers[2], h)
        h = h + _module_linear(block.emb_layers[1], F.silu(emb))[:, :, None, None]
        h = F.silu(self.group_norm(block.out_layers[0], h))
        h = _conv(block.out_layers[3], h)
        skip = x if isinstance(block.skip_connection, torch.nn.Identity) else _conv(block.skip_connection, x)
        return skip + h

    def layers(self, block, h: torch.Tensor, emb: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """A ComfyUI TimestepEmbedSequential up to (not including) its Upsample/Downsample."""
        for layer in block:
            if isinstance(layer, ResBlock):
                h = self.resblock(layer, h, emb)
            elif isinstance(layer, SpatialTransformer):
                h = layer(h, context=context, transformer_options={})
            elif isinstance(layer, (Upsample, Downsample)):
                continue
            else:
                h = layer(h)
        return h


def _conv(conv, h: torch.Tensor) -> torch.Tensor:
    bias = conv.bias.to(h) if conv.bias is not None else None
    return F.conv2d(h, conv.weight.to(h), bias, conv.stride, conv.padding, conv.dilation, conv.groups)


def _module_linear(linear, x: torch.Tensor) -> torch.Tensor:
    return F.linear(x, linear.weight.to(x), linear.bias.to(x) if linear.bias is not None else None)


def _timestep_sinusoid(timesteps: torch.Tensor, channels: int) -> torch.Tensor:
    """diffusers Timesteps(flip_sin_to_cos=True, freq_shift=0): [cos, sin] of t * 10000^(-i/half)."""
    half = channels // 2
    frequencies = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / half)
    arguments = timesteps.float()[:, None] * frequencies.to(timesteps.device)[None]
    return torch.cat([torch.cos(arguments), torch.sin(arguments)], dim=-1)


def reference_unet(
    unet, state, xc, timesteps, context, frames, inflated_groupnorm, y=None, motion_groupnorm="frame"
) -> torch.Tensor:
    """UNet3DConditionModel's output (the model prediction) for the ComfyUI UNetModel's weights."""
    run = _Run(state, frames, not inflated_groupnorm, motion_groupnorm)
    dtype = xc.dtype
    t_emb = _timestep_sinusoid(timesteps, unet.model_channels).to(dtype)
    emb = _module_linear(unet.time_embed[2], F.silu(_module_linear(unet.time_embed[0], t_emb)))
    if unet.num_classes is not None:
        if y is None:
            raise ValueError("this UNet is class/ADM-conditioned (SDXL): pass y")
        emb = emb + unet.label_emb(y.to(dtype))

    skips = []
    h = xc
    level, index = 0, 0
    for block in unet.input_blocks:
        downsample = next((layer for layer in block if isinstance(layer, Downsample)), None)
        if downsample is not None:
            h = downsample(h)
            level, index = level + 1, 0
        else:
            h = run.layers(block, h, emb, context)
            if any(isinstance(layer, ResBlock) for layer in block):
                # CrossAttnDownBlock3D / DownBlock3D: resnet, attention, motion module; the output is the skip
                h = run.motion("down", level, index, h)
                index += 1
        skips.append(h)

    if unet.middle_block is not None:
        # UNetMidBlock3DCrossAttn: resnets[0], then per layer attention, motion module, resnet
        seen_attention = False
        has_attention = any(isinstance(layer, SpatialTransformer) for layer in unet.middle_block)
        for position, layer in enumerate(unet.middle_block):
            if isinstance(layer, ResBlock):
                h = run.resblock(layer, h, emb)
                if not has_attention and position == 0:
                    h = run.motion("mid", None, 0, h)
            elif isinstance(layer, SpatialTransformer):
                h = layer(h, context=context, transformer_options={})
                if not seen_attention:
                    h = run.motion("mid", None, 0, h)
                    seen_attention = True
            else:
                h = layer(h)

    level, index = 0, 0
    for block in unet.output_blocks:
        h = torch.cat([h, skips.pop()], dim=1)
        h = run.layers(block, h, emb, context)
        if any(isinstance(layer, ResBlock) for layer in block):
            # CrossAttnUpBlock3D / UpBlock3D: resnet, attention, motion module, and the upsampler last
            h = run.motion("up", level, index, h)
            index += 1
        upsample = next((layer for layer in block if isinstance(layer, Upsample)), None)
        if upsample is not None:
            h = upsample(h, output_shape=skips[-1].shape if skips else None)
            level, index = level + 1, 0

    unused = sorted(set(state) - run.used)
    if unused:
        raise ValueError(f"{len(unused)} motion-module keys have no site in this UNet, e.g. {unused[:3]}")
    h = F.silu(run.group_norm(unet.out[0], h))
    return _conv(unet.out[2], h)


def reference_denoised(
    base_model,
    motion_state_dict: dict[str, torch.Tensor],
    x: torch.Tensor,
    sigma: float,
    context: torch.Tensor,
    videos: int,
    inflated_groupnorm: bool,
    *,
    y: torch.Tensor | None = None,
    motion_groupnorm: str = "frame",
) -> torch.Tensor:
    """The denoised latents AnimateDiff's 3D UNet gives for a video batch, as comfy's BaseModel.apply_model.

    x: (videos*frames, C, H, W), each video's frames contiguous; context: (videos*frames, tokens, dim);
    y: SDXL's ADM vector per frame. inflated_groupnorm=False pools the ResNet norm1/norm2 and final-norm
    statistics over each video's frames (AnimateDiff v1); True normalises per frame (v2/v3, AnimateLCM, SDXL).
    motion_groupnorm="video" reproduces the AnimateDiff sdxl branch's motion-module GroupNorm over frames."""
    if x.shape[0] % videos:
        raise ValueError(f"a batch of {x.shape[0]} cannot be split into {videos} videos")
    frames = x.shape[0] // videos
    unet = base_model.diffusion_model
    sampling = base_model.model_sampling
    sigmas = torch.full((x.shape[0],), float(sigma), device=x.device)
    dtype = base_model.manual_cast_dtype or base_model.get_dtype()
    xc = sampling.calculate_input(sigmas, x).to(dtype)
    timesteps = sampling.timestep(sigmas).float()
    context = context.to(device=x.device, dtype=dtype)
    with torch.no_grad():
        output = reference_unet(
            unet, motion_state_dict, xc, timesteps, context, frames, inflated_groupnorm, y, motion_groupnorm
        )
    return sampling.calculate_denoised(sigmas, output.float(), x)
