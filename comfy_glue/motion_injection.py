"""AnimateDiff motion modules inside a ComfyUI UNet: where each one goes, and the patches that run it.

AnimateDiff's UNet3DConditionModel runs a motion module after every (ResNet, attention) pair of its down
and up blocks (after the ResNet where a block has no attention), before any down- or upsampler, and, in v2,
after the middle block's attention. In ComfyUI's UNet each such pair is one of input_blocks / output_blocks,
so a module follows that block's last SpatialTransformer, or its ResBlock: an object patch on the layer's
forward, on the inflated clone only. The modules themselves live in their own ModelPatcher, attached as an
additional model, so ComfyUI loads, offloads and (for a motion LoRA) patches them like any model.
"""

from dataclasses import dataclass

import comfy.model_patcher
from comfy.ldm.modules.attention import SpatialTransformer
from comfy.ldm.modules.diffusionmodules.openaimodel import Downsample, ResBlock, UNetModel, Upsample
from torch import nn

from ..tav_core.errors import TAVInputError
from ..tav_core.motion_module import FramesOverTable, MotionModules, TemporalModule
from ..tav_core.motion_module_file import MotionModuleSpec
from ..tav_core.tuned_weights_file import MotionRecord
from ..tav_core.video_batch import current_videos
from .unet_forward import comfy_attention_fn, sampling_options

MOTION_MODELS_KEY = "tav_motion"
CONTEXT_WINDOWS_NODE = "Context Windows (Manual)"


@dataclass(frozen=True)
class MotionModule:
    """A loaded motion module (the MOTION_MODULE value): the modules in their patcher, and what they are."""

    spec: MotionModuleSpec
    name: str  # the file it came from
    identity: str  # fingerprint of the module's weights and of the motion LoRA applied to it
    patcher: comfy.model_patcher.ModelPatcher  # holds MotionModules; a motion LoRA is a weight patch on it
    lora: str = ""  # the applied motion LoRA in words, or ""

    def describe(self) -> str:
        return f"{self.name} ({self.spec.describe()}{', LoRA ' + self.lora if self.lora else ''})"


@dataclass(frozen=True)
class MotionSite:
    """The UNet layer a motion module follows."""

    key: str  # the module's name in the file, e.g. "down_blocks.0.motion_modules.1"
    path: str  # the layer's dotted path from the BaseModel
    layer: nn.Module
    width: int  # channels the layer puts out


@dataclass(frozen=True)
class MotionPlacement:
    """What an inflated MODEL records of its motion module (in its Inflation attachment)."""

    name: str
    spec: MotionModuleSpec
    identity: str
    sites: tuple[MotionSite, ...]


def followed_layer(block: nn.Sequential) -> tuple[int, nn.Module]:
    """The block's last SpatialTransformer, else its ResBlock: where AnimateDiff's module sits."""
    for index in reversed(range(len(block))):
        if isinstance(block[index], SpatialTransformer):
            return index, block[index]
    for index, layer in enumerate(block):
        if isinstance(layer, ResBlock):
            return index, layer
    raise ValueError("a UNet block without ResBlock")


def level_sites(blocks: nn.ModuleList, group: str, file_group: str, ends_level: type) -> list[MotionSite]:
    """One site per ResBlock-carrying block; a block holding `ends_level` (a down- or upsampler) ends a level."""
    sites, level, index = [], 0, 0
    for block_id, block in enumerate(blocks):
        if any(isinstance(layer, ResBlock) for layer in block):
            layer_index, layer = followed_layer(block)
            width = next(layer for layer in block if isinstance(layer, ResBlock)).out_channels
            key = f"{file_group}.{level}.motion_modules.{index}"
            sites.append(MotionSite(key, f"diffusion_model.{group}.{block_id}.{layer_index}", layer, width))
            index += 1
        if any(isinstance(layer, ends_level) for layer in block):
            level, index = level + 1, 0
    return sites


def motion_sites(unet: UNetModel) -> dict[str, MotionSite]:
    """Every place of this UNet a motion module can follow, by the module's name in AnimateDiff's files."""
    sites = level_sites(unet.input_blocks, "input_blocks", "down_blocks", Downsample)
    sites += level_sites(unet.output_blocks, "output_blocks", "up_blocks", Upsample)
    middle = [i for i, layer in enumerate(unet.middle_block) if isinstance(layer, SpatialTransformer)]
    if middle:
        width = unet.middle_block[0].out_channels
        sites.append(MotionSite(
            "mid_block.motion_modules.0", f"diffusion_model.middle_block.{middle[0]}", unet.middle_block[middle[0]],
            width,
        ))
    return {site.key: site for site in sites}


def place(motion: MotionModule, unet: UNetModel, model_words: str, node: str) -> tuple[MotionSite, ...]:
    """The site of every module of `motion` in this UNet; a module that has no place, or another width, is refused
    naming the module, its version and the model."""
    available = motion_sites(unet)
    modules = dict(motion.patcher.model.named_motion_modules())
    problems = []
    for key, module in modules.items():
        width = module.temporal_transformer.norm.num_channels
        site = available.get(key)
        if site is None:
            problems.append(f"the model has no place for {key}")
        elif site.width != width:
            problems.append(f"{key} has {width} channels, the model's layer there {site.width}")
    unfilled = sorted(set(available) - set(modules) - {"mid_block.motion_modules.0"})
    if unfilled:
        more = f" and {len(unfilled) - 1} more" if unfilled[1:] else ""
        problems.append(f"the module has nothing for {unfilled[0]}{more}")
    if problems:
        raise TAVInputError(
            node, "motion_module",
            f"{motion.describe()} does not fit this MODEL, a {model_words}: {'; '.join(problems[:3])}.",
            f"Use a motion module made for {motion.spec.family.value} checkpoints of this kind, or another checkpoint.",
        )
    return tuple(available[key] for key in modules)


class MotionAfter:
    """Object patch for a UNet layer's forward: the layer as ComfyUI runs it, then its motion module."""

    def __init__(self, layer: nn.Module, module: TemporalModule, motion_name: str, node: str) -> None:
        self.layer, self.module = layer, module
        self.motion_name, self.node = motion_name, node

    def __call__(self, *args, **kwargs):
        x = type(self.layer).forward(self.layer, *args, **kwargs)
        attention = comfy_attention_fn(None, sampling_options())
        try:
            return self.module(x, current_videos(), attention=attention)
        except FramesOverTable as error:
            raise frames_error(self.node, "motion_module", self.motion_name, error.frames, error.table) from error


def frames_error(node: str, input_name: str, motion_name: str, frames: int, limit: int) -> TAVInputError:
    return TAVInputError(
        node, input_name,
        f"{motion_name} has a position table of {limit} frames; this video has {frames} frames.",
        f"Use at most {limit} frames, or add ComfyUI's {CONTEXT_WINDOWS_NODE} node on the model with a "
        f"context_length of at most {limit}.",
    )


def attach_motion(inflated, patcher: comfy.model_patcher.ModelPatcher, placement: MotionPlacement, node: str) -> None:
    """Give an inflated clone its motion-module patcher and the patches that run its modules."""
    swap_motion_patcher(inflated, patcher)
    modules: MotionModules = patcher.model
    named = dict(modules.named_motion_modules())
    for site in placement.sites:
        patch = MotionAfter(site.layer, named[site.key], placement.name, node)
        inflated.add_object_patch(f"{site.path}.forward", patch)


def motion_patcher_of(model) -> comfy.model_patcher.ModelPatcher | None:
    patchers = model.get_additional_models_with_key(MOTION_MODELS_KEY)
    return patchers[0] if patchers else None


def swap_motion_patcher(model, patcher: comfy.model_patcher.ModelPatcher) -> None:
    """Run `model`'s motion modules through another patcher of the same modules (a clone with other patches):
    the object patches reach the modules themselves, so they stay."""
    model.set_additional_models(MOTION_MODELS_KEY, [patcher])


def motion_record(inflation) -> MotionRecord | None:
    """What a tuned-weights file records of an inflated model's motion module."""
    placement = inflation.motion
    if placement is None:
        return None
    return MotionRecord(placement.name, placement.spec.version.value, placement.identity)


def check_frame_limit(model, placement: MotionPlacement | None, frames: int, node: str, input_name: str) -> None:
    """Refuse, before any work, a video longer than the motion module's position table (per context window)."""
    if placement is None:
        return
    limit = placement.spec.frame_limit
    handler = model.model_options.get("context_handler")
    window = min(frames, getattr(handler, "context_length", frames)) if handler is not None else frames
    if window > limit:
        raise frames_error(node, input_name, placement.name, window, limit)
