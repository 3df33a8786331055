"""Inflate a ComfyUI image UNet into a Tune-A-Video video UNet, as patches on a clone.

Nothing in the user's model changes: the clone carries
- an attn1 replacement per transformer block (cross-frame attention on the block's own projections,
  so LoRAs and weight patches on to_q/to_k/to_v keep working),
- an object patch on each BasicTransformerBlock.forward that runs the block, then its temporal
  attention (ComfyUI has no hook after the feed-forward),
- object patches on the ResNet/final GroupNorms for per-video statistics, plus a diffusion-model
  wrapper that tells them how the batch splits into videos,
- with temporal_conv pseudo3d, an object patch on each 3x3 convolution of the ResNet blocks that runs the
  convolution, then its temporal convolution (the same wrapper tells it the videos),
- the temporal layers themselves (attention and convolutions), in their own ModelPatcher attached as an
  additional model so ComfyUI loads and offloads them with the UNet;
- with a motion module, the patches that run AnimateDiff's modules after their layers and the modules'
  own ModelPatcher (comfy_glue.motion_injection).
Object patches are applied only while this clone is loaded and are undone when another clone loads.
"""

import logging
from dataclasses import dataclass
from functools import partial

import comfy.model_patcher
import comfy.patcher_extension
import torch
from comfy.ldm.modules.attention import BasicTransformerBlock, SpatialTransformer, SpatialVideoTransformer
from comfy.ldm.modules.diffusionmodules.openaimodel import ResBlock, UNetModel, VideoResBlock
from torch import nn

from ..tav_core.errors import TAVInputError
from ..tav_core.frame_attention import cross_frame_attention
from ..tav_core.group_norm import group_norm_per_video
from ..tav_core.inflation_config import AttentionMode, GroupNormMode, InflationConfig, TemporalConvMode
from ..tav_core.temporal_attention import TemporalAttention
from ..tav_core.temporal_conv import TemporalConv
from ..tav_core.video_batch import current_videos
from .inversion_record import inversion_guard
from .layer_ops import TemporalLayerOps
from .motion_injection import MotionModule, MotionPlacement, attach_motion, place
from .unet_forward import VIDEO_BATCH_WRAPPER_KEY, anchor_frames, comfy_attention_fn, video_batch_wrapper, videos_in

INFLATION_ATTACHMENT = "tav_inflation"
TEMPORAL_MODELS_KEY = "tav_temporal"
INVERSION_GUARD_KEY = "tav_inversion_guard"
TEMPORAL_INIT_SEED = 0


@dataclass(frozen=True)
class TransformerBlockSite:
    """One BasicTransformerBlock of the UNet and how ComfyUI addresses it."""

    key: tuple[str, int, int]  # (block name, block id, index in its SpatialTransformer): ComfyUI's patch key
    path: str  # dotted path from the BaseModel
    block: BasicTransformerBlock

    @property
    def name(self) -> str:
        return "_".join(str(part) for part in self.key)


@dataclass(frozen=True)
class UNetSites:
    """Every place of a UNet the pack patches, found in one walk at inflation and kept with the model."""

    transformer_blocks: tuple[TransformerBlockSite, ...]  # in the order the UNet runs them
    layers: tuple[tuple[str, nn.Module], ...]  # ResNet blocks and spatial transformers: checkpointed/compiled
    resnet_norms: tuple[tuple[str, nn.GroupNorm], ...]  # the GroupNorms the reference runs on (b, c, f, h, w)
    resnet_convs: tuple[tuple[str, nn.Conv2d], ...]  # the ResNet blocks' 3x3 convolutions (not the skip's)


@dataclass(frozen=True)
class Inflation:
    """What an inflated MODEL carries (as a ModelPatcher attachment, shared by its clones)."""

    config: InflationConfig
    sites: UNetSites
    motion: MotionPlacement | None = None


class CrossFrameAttn1:
    """attn1 replacement: ComfyUI hands in the block's projected q/k/v; keys/values come from other frames."""

    def __init__(self, mode: AttentionMode) -> None:
        self.mode = AttentionMode(mode)

    def __deepcopy__(self, memo: dict) -> "CrossFrameAttn1":
        return self  # immutable; ModelPatcher.clone deep-copies model_options

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, extra_options: dict) -> torch.Tensor:
        videos = videos_in(extra_options)
        anchors = anchor_frames()
        first = before = None
        if anchors is not None and self.mode != AttentionMode.FULL:
            block = extra_options["block"]
            layer = (block[0], block[1], extra_options.get("block_index", 0))
            first = anchors.first_frames(layer, k, v, videos)
            if self.mode == AttentionMode.SPARSE_CAUSAL:
                before = anchors.previous_frames(layer, k, v, videos)
        return cross_frame_attention(
            q, k, v,
            heads=extra_options["n_heads"],
            videos=videos,
            mode=self.mode,
            attention=comfy_attention_fn(extra_options.get("attn_precision"), extra_options),
            first=first,
            before=before,
        )


class TemporalBlockForward:
    """Object patch for a BasicTransformerBlock's forward: the block as ComfyUI runs it, then temporal attention."""

    def __init__(self, block: BasicTransformerBlock, temporal: TemporalAttention) -> None:
        self.block = block
        self.temporal = temporal

    def __call__(self, x: torch.Tensor, context=None, transformer_options: dict | None = None) -> torch.Tensor:
        transformer_options = {} if transformer_options is None else transformer_options
        x = type(self.block).forward(self.block, x, context=context, transformer_options=transformer_options)
        attention = comfy_attention_fn(self.block.attn_precision, transformer_options)
        return self.temporal(x, videos_in(transformer_options), attention=attention)


class PerVideoGroupNorm:
    """Object patch for a ResNet GroupNorm's forward: statistics pooled over the frames of each video."""

    def __init__(self, norm: nn.GroupNorm) -> None:
        self.norm = norm

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return group_norm_per_video(x, current_videos(), partial(type(self.norm).forward, self.norm))


class PseudoThreeDConv:
    """Object patch for a ResNet block convolution's forward: the 2-D convolution, then its temporal convolution."""

    def __init__(self, conv: nn.Conv2d, temporal: TemporalConv) -> None:
        self.conv = conv
        self.temporal = temporal

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.temporal(type(self.conv).forward(self.conv, x), current_videos())


class TemporalLayers(nn.Module):
    """Every layer inflation adds to one UNet: temporal attention keyed by TransformerBlockSite.name, pseudo-3D
    convolutions keyed by conv_name. One container, so that One-Shot Tune trains both and the tuned-weights file
    carries both ("layers." and "convs." keys); without pseudo3d there are no "convs." keys, as in older files."""

    def __init__(self, layers: dict[str, TemporalAttention], convs: dict[str, TemporalConv]) -> None:
        super().__init__()
        self.layers = nn.ModuleDict(layers)
        self.convs = nn.ModuleDict(convs)


def conv_name(path: str) -> str:
    """A ResNet convolution's key among the temporal convolutions (module names cannot hold dots)."""
    return path.removeprefix("diffusion_model.").replace(".", "_")


def supported_unet(model, node: str) -> UNetModel:
    """The UNetModel inside a ComfyUI MODEL, or a clear error for anything this pack cannot inflate."""
    base = getattr(model, "model", None)
    unet = getattr(base, "diffusion_model", None)
    video_parts = (SpatialVideoTransformer, VideoResBlock)
    if not isinstance(unet, UNetModel) or any(isinstance(m, video_parts) for m in unet.modules()):
        raise TAVInputError(
            node, "model",
            f"{type(base).__name__} (diffusion model {type(unet).__name__}) is not a UNet this pack supports.",
            "Tune-A-Video inflates Stable Diffusion 1.x, 2.x and SDXL UNets: load one of those checkpoints.",
        )
    return unet


_BLOCK_GROUPS = {"input_blocks": "input", "middle_block": "middle", "output_blocks": "output"}


def spatial_convs(block: ResBlock) -> list[tuple[str, nn.Conv2d]]:
    """The in-layers' and out-layers' convolutions of a ResNet block where their kernel is larger than 1x1 (a 1x1
    kernel gets no temporal convolution in Make-A-Video); the skip connection is never one of them."""
    convs = [("in_layers.2", block.in_layers[2]), ("out_layers.3", block.out_layers[3])]
    return [(name, conv) for name, conv in convs if isinstance(conv, nn.Conv2d) and max(conv.kernel_size) > 1]


def find_sites(unet: UNetModel) -> UNetSites:
    """Walk the UNet once: its transformer blocks (with ComfyUI's patch keys), layers, ResNet GroupNorms and
    convolutions."""
    blocks, layers, norms, convs = [], [], [], []
    for name, module in unet.named_modules():
        path = f"diffusion_model.{name}"
        if isinstance(module, BasicTransformerBlock):
            group, block_id, *_, index = name.split(".")
            if group in _BLOCK_GROUPS:
                block_number = 0 if group == "middle_block" else int(block_id)
                blocks.append(TransformerBlockSite((_BLOCK_GROUPS[group], block_number, int(index)), path, module))
        elif isinstance(module, (ResBlock, SpatialTransformer)):
            layers.append((path, module))
            if isinstance(module, ResBlock):
                norms += [(f"{path}.in_layers.0", module.in_layers[0]), (f"{path}.out_layers.0", module.out_layers[0])]
                convs += [(f"{path}.{conv_path}", conv) for conv_path, conv in spatial_convs(module)]
    norms.append(("diffusion_model.out.0", unet.out[0]))
    norms = [(path, norm) for path, norm in norms if isinstance(norm, nn.GroupNorm)]
    return UNetSites(tuple(blocks), tuple(layers), tuple(norms), tuple(convs))


def unet_compute_dtype(model) -> torch.dtype:
    """The dtype `model` runs its UNet in: its own compute-dtype patch, else the checkpoint's.

    Read through the patcher, never from the shared BaseModel's attribute: that holds whichever clone is
    loaded now (One-Shot Tune's trainer sets its training precision there until another model loads).
    """
    return model.get_model_object("manual_cast_dtype") or model.model.get_dtype()


def empty_temporal_layers(inflation: Inflation, dtype: torch.dtype, device: torch.device) -> TemporalLayers:
    """The layers inflation adds, of the right shapes, uninitialised (ComfyUI's layers skip init): to load weights
    into."""
    config = inflation.config
    layers, convs = {}, {}
    for site in inflation.sites.transformer_blocks if config.temporal_layers else ():
        dim = site.block.norm3.normalized_shape[0]
        layers[site.name] = TemporalAttention(
            dim, site.block.n_heads, site.block.d_head, config.temporal_position_encoding,
            operations=TemporalLayerOps, dtype=dtype, device=device,
        )
    for path, conv in inflation.sites.resnet_convs if config.temporal_conv == TemporalConvMode.PSEUDO3D else ():
        convs[conv_name(path)] = TemporalConv(conv.out_channels, TemporalLayerOps, dtype=dtype, device=device)
    return TemporalLayers(layers, convs)


def fresh_temporal_layers(inflation: Inflation, dtype: torch.dtype, device: torch.device) -> TemporalLayers:
    """New temporal layers, an exact identity: initialised on the CPU in fp32, so every machine starts alike."""
    layers = empty_temporal_layers(inflation, torch.float32, torch.device("cpu"))
    generator = torch.Generator().manual_seed(TEMPORAL_INIT_SEED)
    for layer in layers.layers.values():
        layer.initialize(generator)
    for conv in layers.convs.values():
        conv.initialize()
    return layers.to(device=device, dtype=dtype)


def attach_temporal_layers(inflated, layers: TemporalLayers) -> "comfy.model_patcher.ModelPatcher":
    """Give an inflated clone its own temporal layers: an additional model (returned) plus the block- and
    conv-forward patches that run them."""
    patcher = comfy.model_patcher.ModelPatcher(
        layers, load_device=inflated.load_device, offload_device=inflated.offload_device
    )
    inflated.set_additional_models(TEMPORAL_MODELS_KEY, [patcher])
    sites = inflation_of(inflated).sites
    for site in sites.transformer_blocks if layers.layers else ():
        inflated.add_object_patch(f"{site.path}.forward", TemporalBlockForward(site.block, layers.layers[site.name]))
    for path, conv in sites.resnet_convs if layers.convs else ():
        inflated.add_object_patch(f"{path}.forward", PseudoThreeDConv(conv, layers.convs[conv_name(path)]))
    return patcher


def temporal_layers_of(model) -> TemporalLayers | None:
    patchers = model.get_additional_models_with_key(TEMPORAL_MODELS_KEY)
    return patchers[0].model if patchers else None


def inflation_of(model) -> Inflation | None:
    """What a MODEL was inflated with (settings and patched sites), or None for an image model."""
    return model.get_attachment(INFLATION_ATTACHMENT)


def describe_architecture(model, sites: UNetSites) -> str:
    """The base UNet in words, so a mismatch message says what each side is."""
    unet = model.model.diffusion_model
    context = sites.transformer_blocks[0].block.attn2
    context_dim = context.to_k.in_features if context is not None else None
    return (
        f"{type(model.model.model_config).__name__} UNet ({unet.in_channels} latent channels, "
        f"{unet.model_channels} base channels, text width {context_dim}, "
        f"{len(sites.transformer_blocks)} transformer blocks)"
    )


def inflate_model(
    model, config: InflationConfig, node: str, motion: MotionModule | None = None
) -> "comfy.model_patcher.ModelPatcher":
    """A patched clone of `model` that runs frames-as-batch videos the Tune-A-Video way, with AnimateDiff's motion
    modules where `motion` is given."""
    unet = supported_unet(model, node)
    if inflation_of(model) is not None:
        raise TAVInputError(
            node, "model", "this MODEL is already inflated.",
            "Connect the checkpoint's MODEL (or a LoRA on it) instead; inflate once per model.",
        )
    sites = find_sites(unet)
    if not sites.transformer_blocks:
        raise TAVInputError(node, "model", f"{type(unet).__name__} has no spatial transformer blocks to inflate.")
    placement = None
    if motion is not None:
        motion_sites = place(motion, unet, describe_architecture(model, sites), node)
        placement = MotionPlacement(motion.describe(), motion.spec, motion.identity, motion_sites)
    inflation = Inflation(config, sites, placement)

    inflated = model.clone()
    inflated.set_attachments(INFLATION_ATTACHMENT, inflation)
    if config.attention != AttentionMode.PER_FRAME:
        existing = inflated.model_options["transformer_options"].get("patches_replace", {}).get("attn1", {})
        taken = [site.key for site in sites.transformer_blocks if site.key in existing]
        if taken:
            logging.warning("Tune-A-Video: replacing attn1 patches from another node on %d blocks", len(taken))
        attn1 = CrossFrameAttn1(config.attention)
        for site in sites.transformer_blocks:
            inflated.set_model_attn1_replace(attn1, *site.key)

    if config.adds_layers:
        layers = fresh_temporal_layers(inflation, unet_compute_dtype(model), model.offload_device)
        attach_temporal_layers(inflated, layers)
    if placement is not None:
        attach_motion(inflated, motion.patcher, placement, node)

    if config.groupnorm == GroupNormMode.PER_VIDEO:
        for path, norm in sites.resnet_norms:
            inflated.add_object_patch(f"{path}.forward", PerVideoGroupNorm(norm))
    # Layers that get no sampling options (GroupNorms, convolutions, motion modules) read the video count from it.
    needs_videos = config.groupnorm == GroupNormMode.PER_VIDEO or config.temporal_conv != TemporalConvMode.NONE
    if needs_videos or placement is not None:
        comfy.patcher_extension.add_wrapper_with_key(
            comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, VIDEO_BATCH_WRAPPER_KEY,
            video_batch_wrapper, inflated.model_options, is_model_options=True,
        )

    comfy.patcher_extension.add_wrapper_with_key(
        comfy.patcher_extension.WrappersMP.OUTER_SAMPLE, INVERSION_GUARD_KEY,
        inversion_guard, inflated.model_options, is_model_options=True,
    )
    return inflated
