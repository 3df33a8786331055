"""Motion-module and motion-LoRA files into MOTION_MODULE values: safe loading, layout checks, LoRA patches."""

import hashlib
from pathlib import Path

import comfy.model_management
import comfy.model_patcher
import torch
from comfy.weight_adapter.lora import LoRAAdapter

from ..tav_core.motion_module import MotionModules
from ..tav_core.motion_module_file import (
    LowRank,
    lora_mismatches,
    module_fingerprint,
    read_motion_lora,
    read_motion_module,
)
from ..tav_core.tuned_weights_file import check_finite
from ..tav_core.weights_file import WeightsFileError, in_brief, shape_mismatches
from .layer_ops import CastingLayerOps
from .motion_injection import MotionModule
from .weights_loading import read_tensors


def file_dtype(tensors: dict[str, torch.Tensor]) -> torch.dtype:
    """The floating dtype most of a file's values are stored in: the modules keep it (weights are cast per call)."""
    counts: dict[torch.dtype, int] = {}
    for value in tensors.values():
        if value.is_floating_point():
            counts[value.dtype] = counts.get(value.dtype, 0) + value.numel()
    return max(counts, key=counts.get) if counts else torch.float32


def load_motion_module(path: Path, name: str) -> MotionModule:
    """The modules of an AnimateDiff motion-module file in their own patcher; a WeightsFileError says what is wrong."""
    spec, tensors = read_motion_module(read_tensors(path))
    modules = MotionModules(spec.layout, ops=CastingLayerOps, dtype=file_dtype(tensors), device=torch.device("cpu"))
    problems = shape_mismatches({key: value.shape for key, value in modules.state_dict().items()}, tensors)
    if problems:
        raise WeightsFileError(f"its tensors are not those of an {spec.describe()} ({in_brief(problems)})")
    check_finite(tensors)
    modules.load_state_dict(tensors)
    modules.requires_grad_(False)
    patcher = comfy.model_patcher.ModelPatcher(
        modules,
        load_device=comfy.model_management.get_torch_device(),
        offload_device=comfy.model_management.unet_offload_device(),
    )
    return MotionModule(spec, name, module_fingerprint(tensors), patcher)


def with_lora_patches(patcher, loras: dict[str, LowRank], strength: float):
    """A clone of a patcher with LoRAs as ComfyUI weight patches (the pack's and AnimateDiff's convention: no
    alpha, so weight + strength * up @ down)."""
    patched = patcher.clone()
    patched.add_patches(
        {key: LoRAAdapter(set(), (lora.up, lora.down, None, None, None, None)) for key, lora in loras.items()},
        strength,
    )
    return patched


def lora_fit_problems(motion: MotionModule, loras: dict[str, LowRank]) -> list[str]:
    shapes = {key: value.shape for key, value in motion.patcher.model.state_dict().items()}
    return lora_mismatches(loras, shapes)


def with_motion_lora(motion: MotionModule, path: Path, name: str, strength: float) -> MotionModule:
    """`motion` with a motion-LoRA file applied at `strength`; a LoRA made for another module is refused."""
    tensors = read_tensors(path)
    loras = read_motion_lora(tensors)
    check_finite(tensors)
    problems = lora_fit_problems(motion, loras)
    if problems:
        raise WeightsFileError(f"it was made for another motion module than {motion.describe()} ({in_brief(problems)})")
    identity = hashlib.sha256(f"{motion.identity}:{module_fingerprint(tensors)}:{strength!r}".encode()).hexdigest()
    return MotionModule(
        motion.spec, motion.name, identity, with_lora_patches(motion.patcher, loras, strength), f"{name} @ {strength:g}"
    )
