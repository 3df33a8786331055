"""AnimateDiff motion-module and motion-LoRA files: which version a file is, read from its keys alone.

Released modules have no key prefix: `<block>.motion_modules.<j>.temporal_transformer.<...>` with
<block> one of down_blocks.<i>, up_blocks.<i>, mid_block. HotshotXL's files name the same layers
`temporal_attentions.<j>.` with the table under `pos_encoder.positional_encoding`; they are renamed on
load. Motion LoRAs hold `<attention block>.processor.<to_q|to_k|to_v|to_out>_lora.<down|up>.weight`.
"""

import hashlib
import re
from dataclasses import dataclass
from enum import Enum

import torch

from .inflation_config import GroupNormMode
from .motion_module import COMPUTED_TABLE_ROWS, MotionLayout
from .weight_samples import sampled_bytes
from .weights_file import WeightsFileError


class MotionVersion(str, Enum):
    V1 = "v1"  # mm_sd_v14 / mm_sd_v15: 24-frame table
    V2 = "v2"  # mm_sd_v15_v2: a mid-block module, 32-frame table
    V3 = "v3"  # v3_sd15_mm: no mid block, 32-frame table
    ANIMATELCM = "animatelcm"  # SD1.5 modules saved without a position table
    SDXL = "sdxl"  # mm_sdxl_v10_beta
    HOTSHOTXL = "hotshotxl"  # HotshotXL's temporal layers


class ModelFamily(str, Enum):
    SD1 = "SD1.x"
    SDXL = "SDXL"
    SHAPES_DEMO = "shapes-world demo"  # the pack's 2-level toy UNet (TAV Load Demo Model)


FAMILY_BY_LEVELS = {4: ModelFamily.SD1, 3: ModelFamily.SDXL, 2: ModelFamily.SHAPES_DEMO}


_MODULE_KEY = re.compile(
    r"^((?:down_blocks|up_blocks)\.(\d+)|mid_block)\.motion_modules\.(\d+)\.temporal_transformer\."
)
_HOTSHOT_KEY = re.compile(r"\.temporal_attentions\.(\d+)\.")
_LORA_KEY = re.compile(r"^(.*\.attention_blocks\.\d+)\.processor\.(to_q|to_k|to_v|to_out)_lora\.(down|up)\.weight$")
_PROJECTION_KEY = re.compile(r"^(.*\.attention_blocks\.\d+)\.(to_q|to_k|to_v|to_out\.0)\.weight$")
_LORA_TARGET = {"to_q": "to_q", "to_k": "to_k", "to_v": "to_v", "to_out": "to_out.0"}
NORM_WEIGHT = "temporal_transformer.norm.weight"
TABLE = "temporal_transformer.transformer_blocks.0.attention_blocks.0.pos_encoder.pe"


@dataclass(frozen=True)
class MotionModuleSpec:
    """What a motion-module file is: its version, the model family it is for, its modules and their widths."""

    version: MotionVersion
    family: ModelFamily
    layout: MotionLayout

    @property
    def frame_limit(self) -> int:
        return self.layout.table or COMPUTED_TABLE_ROWS

    def describe(self) -> str:
        table = f"{self.layout.table}-frame table" if self.layout.table else "no position table"
        mid = " + mid block" if self.layout.mid is not None else ""
        return (
            f"AnimateDiff {self.version.value} ({self.family.value}, {self.layout.module_count()} modules{mid}, "
            f"{table})"
        )

    def prescribed_groupnorm(self) -> GroupNormMode:
        """The image UNet's GroupNorm as AnimateDiff's inference configs run this version: v1 without
        use_inflated_groupnorm (statistics over all frames), later versions per frame."""
        return GroupNormMode.PER_VIDEO if self.version == MotionVersion.V1 else GroupNormMode.PER_FRAME


def what_else(keys: list[str]) -> str:
    """A guess at what a file that is no motion module is, for the error message."""
    if any(_LORA_KEY.match(key) for key in keys):
        return "it is a motion LoRA: choose it as motion_lora"
    if any(".motion_modules." in key for key in keys):
        return (
            "its motion-module keys are in another layout (diffusers' MotionAdapter?): use the original AnimateDiff "
            "file"
        )
    if any(key.startswith(("model.diffusion_model.", "first_stage_model.", "cond_stage_model.")) for key in keys):
        return "it looks like a Stable Diffusion checkpoint: load it with Load Checkpoint"
    if any("lora_" in key or ".lora." in key for key in keys):
        return "it looks like an image LoRA: load it with LoraLoader"
    return f"none of its {len(keys)} tensors is named like a motion module's, e.g. {sorted(keys)[:1]}"


def renamed_hotshot(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """HotshotXL's key names in AnimateDiff's spelling."""
    renamed = {}
    for key, value in state_dict.items():
        key = _HOTSHOT_KEY.sub(lambda m: f".motion_modules.{m.group(1)}.temporal_transformer.", key)
        renamed[key.replace("pos_encoder.positional_encoding", "pos_encoder.pe")] = value
    return renamed


def module_prefixes(state_dict: dict[str, torch.Tensor]) -> dict[str, tuple[str, int, int]]:
    """'down_blocks.0.motion_modules.1' -> ('down_blocks', 0, 1) for every module in the file."""
    prefixes = {}
    for key in state_dict:
        match = _MODULE_KEY.match(key)
        if match is None:
            raise WeightsFileError(f"it is not a motion module ({what_else(list(state_dict))})")
        group = match.group(1).split(".")[0]
        block = int(match.group(2)) if match.group(2) is not None else 0
        prefixes[key[: match.end() - len(".temporal_transformer.")]] = (group, block, int(match.group(3)))
    return prefixes


def widths(state_dict: dict, prefixes: dict[str, tuple[str, int, int]], group: str) -> tuple[tuple[int, ...], ...]:
    """Channel widths of a group's modules, block by block; a gap in the numbering is a damaged file."""
    by_block: dict[int, dict[int, int]] = {}
    for prefix, (name, block, index) in prefixes.items():
        if name == group:
            by_block.setdefault(block, {})[index] = width_of(state_dict, prefix)
    if sorted(by_block) != list(range(len(by_block))):
        raise WeightsFileError(f"its {group} are numbered {sorted(by_block)}: blocks are missing")
    result = []
    for block in range(len(by_block)):
        indices = by_block[block]
        if sorted(indices) != list(range(len(indices))):
            raise WeightsFileError(f"{group}.{block} has motion modules {sorted(indices)}: some are missing")
        result.append(tuple(indices[i] for i in range(len(indices))))
    return tuple(result)


def width_of(state_dict: dict, prefix: str) -> int:
    norm = state_dict.get(f"{prefix}.{NORM_WEIGHT}")
    if norm is None or norm.ndim != 1:
        raise WeightsFileError(f"{prefix} has no GroupNorm weight ({prefix}.{NORM_WEIGHT})")
    return int(norm.shape[0])


def read_motion_module(state_dict: dict[str, torch.Tensor]) -> tuple[MotionModuleSpec, dict[str, torch.Tensor]]:
    """The file's spec and its tensors in AnimateDiff's key names; a WeightsFileError says what is wrong."""
    if not state_dict:
        raise WeightsFileError("it holds no tensors")
    if any(_LORA_KEY.match(key) for key in state_dict):
        raise WeightsFileError(f"it is not a motion module ({what_else(list(state_dict))})")
    hotshot = any(_HOTSHOT_KEY.search(key) for key in state_dict)
    if hotshot:
        state_dict = renamed_hotshot(state_dict)
    prefixes = module_prefixes(state_dict)
    down, up = widths(state_dict, prefixes, "down_blocks"), widths(state_dict, prefixes, "up_blocks")
    has_mid = any(group == "mid_block" for group, _, _ in prefixes.values())
    mid = width_of(state_dict, "mid_block.motion_modules.0") if has_mid else None
    if len(down) not in FAMILY_BY_LEVELS or len(up) != len(down):
        raise WeightsFileError(
            f"it has {len(down)} down and {len(up)} up blocks of motion modules; SD1.x modules have 4 and 4, "
            "SDXL modules 3 and 3 (the pack's shapes-world demo modules 2 and 2)"
        )
    tables = {key: value for key, value in state_dict.items() if key.endswith(".pos_encoder.pe")}
    lengths = {int(value.shape[1]) for value in tables.values() if value.ndim == 3}
    if len(lengths) > 1 or len(lengths) != (1 if tables else 0):
        raise WeightsFileError(f"its position tables disagree in length or shape ({sorted(lengths)})")
    table = lengths.pop() if lengths else None
    family = FAMILY_BY_LEVELS[len(down)]
    if hotshot:
        version = MotionVersion.HOTSHOTXL
    elif family == ModelFamily.SDXL:
        version = MotionVersion.SDXL
    elif table is None:
        version = MotionVersion.ANIMATELCM
    elif mid is not None:
        version = MotionVersion.V2
    else:
        version = MotionVersion.V1 if table == 24 else MotionVersion.V3
    # AnimateDiff's SDXL code normalises the module's input over all frames of a video; the others per frame.
    layout = MotionLayout(down, up, mid, table, norm_over_frames=version == MotionVersion.SDXL)
    return MotionModuleSpec(version, family, layout), state_dict


def module_fingerprint(state_dict: dict[str, torch.Tensor]) -> str:
    """Identifies a motion module's weights (names, shapes and sampled values), whatever its file's dtype."""
    digest = hashlib.sha256()
    for key, value in sorted(state_dict.items()):
        digest.update(f"{key}:{tuple(value.shape)}\n".encode() + sampled_bytes(value))
    return digest.hexdigest()


@dataclass(frozen=True)
class LowRank:
    """One projection's LoRA in AnimateDiff's convention: weight + up @ down (no alpha)."""

    up: torch.Tensor  # (out, rank)
    down: torch.Tensor  # (rank, in)


def read_motion_lora(state_dict: dict[str, torch.Tensor]) -> dict[str, LowRank]:
    """Module weight key ('...attention_blocks.0.to_out.0.weight') -> its LoRA, from a motion-LoRA file."""
    if not state_dict:
        raise WeightsFileError("it holds no tensors")
    halves: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state_dict.items():
        match = _LORA_KEY.match(key)
        if match is None:
            if _MODULE_KEY.match(key):
                raise WeightsFileError("it is a motion module, not a motion LoRA: choose it as motion_module")
            raise WeightsFileError(f"it is not a motion LoRA (e.g. {key!r} is no '...processor.to_q_lora.down.weight')")
        block, projection, half = match.groups()
        halves.setdefault(f"{block}.{_LORA_TARGET[projection]}.weight", {})[half] = value
    return {
        target: paired_low_rank(target, pair.get("up"), pair.get("down")) for target, pair in sorted(halves.items())
    }


def paired_low_rank(target: str, up: torch.Tensor | None, down: torch.Tensor | None) -> LowRank:
    """One LoRA read from a file: both halves there, and matrices that multiply (a WeightsFileError otherwise)."""
    if up is None or down is None:
        raise WeightsFileError(f"the LoRA of {target} lacks its {'up' if up is None else 'down'} half")
    if up.ndim != 2 or down.ndim != 2 or up.shape[1] != down.shape[0]:
        raise WeightsFileError(
            f"the LoRA of {target} has up {tuple(up.shape)} and down {tuple(down.shape)}, which do not multiply"
        )
    return LowRank(up, down)


def is_projection_key(key: str) -> bool:
    """A motion module's attention projection weight: what a motion LoRA adapts."""
    return _PROJECTION_KEY.match(key) is not None


def motion_lora_tensors(loras: dict[str, LowRank]) -> dict[str, torch.Tensor]:
    """The inverse of read_motion_lora: AnimateDiff's motion-LoRA file layout."""
    names = {target: name for name, target in _LORA_TARGET.items()}
    tensors = {}
    for target, lora in loras.items():
        block, projection = _PROJECTION_KEY.match(target).groups()
        stem = f"{block}.processor.{names[projection]}_lora"
        tensors[f"{stem}.down.weight"] = lora.down
        tensors[f"{stem}.up.weight"] = lora.up
    return tensors


def lora_mismatches(loras: dict[str, LowRank], module_shapes: dict[str, torch.Size]) -> list[str]:
    """Why a motion LoRA does not fit a module: projections it lacks, or of other shapes."""
    problems = []
    for target, lora in sorted(loras.items()):
        shape = module_shapes.get(target)
        if shape is None:
            problems.append(f"the module has no {target.removesuffix('.weight')}")
        elif (lora.up.shape[0], lora.down.shape[1]) != tuple(shape):
            problems.append(
                f"{target.removesuffix('.weight')} is {tuple(shape)}, the LoRA makes "
                f"{(lora.up.shape[0], lora.down.shape[1])}"
            )
    return problems
