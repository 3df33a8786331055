"""The pack's model folders, registered with ComfyUI's folder_paths (extra_model_paths.yaml aware):
models/tuneavideo for tuned weights, and AnimateDiff-Evolved's folders for motion modules and motion LoRAs."""

import json
import os
from pathlib import Path

import folder_paths
import torch

from ..tav_core.reference_unet import CONFIG_NAME, WEIGHTS_NAMES
from ..tav_core.tuned_weights_file import (
    TunedWeights,
    comfy_lora_contents,
    from_file_contents,
    motion_lora_file_contents,
    to_file_contents,
    without_spatial_part,
)
from ..tav_core.weights_file import (
    EXTENSION,
    check_writable,
    load_safetensors,
    name_parts,
    resolve_in_folder,
    save_atomically,
    save_folder_atomically,
)

TUNED_WEIGHTS_FOLDER = "tuneavideo"
MOTION_MODULES_FOLDER = "animatediff_models"
MOTION_LORA_FOLDER = "animatediff_motion_lora"
COMFY_LORA_FOLDER = "loras"  # ComfyUI's own: where LoraLoader and LoraLoaderModelOnly list files
# Names are kept as listed (no extension added) in these folders, whose files may be .ckpt or .pt too.
KEEPS_NAMES = (MOTION_MODULES_FOLDER, MOTION_LORA_FOLDER)
REFERENCE_UNET_SUBFOLDER = "unet"  # where diffusers' from_pretrained(..., subfolder="unet") looks
# The pack's own demo motion module, listed after models/animatediff_models (which stays where files are saved).
DEMO_MOTION_FOLDER = Path(__file__).resolve().parents[1] / "demo_model" / "animatediff_models"


def register_folder(folder: str, extensions: set[str]) -> None:
    """Add models/<folder>, after any paths extra_model_paths.yaml (or another pack) already gave."""
    folder_paths.add_model_folder_path(folder, os.path.join(folder_paths.models_dir, folder))
    paths, known = folder_paths.folder_names_and_paths[folder]
    shared = folder in KEEPS_NAMES  # AnimateDiff-Evolved lists the same folders: keep what it accepts
    folder_paths.folder_names_and_paths[folder] = (paths, set(known) | extensions if shared else extensions)


register_folder(TUNED_WEIGHTS_FOLDER, {EXTENSION})
for _folder in KEEPS_NAMES:
    register_folder(_folder, set(folder_paths.supported_pt_extensions))
folder_paths.add_model_folder_path(MOTION_MODULES_FOLDER, str(DEMO_MOTION_FOLDER))


def listed_files(folder: str = TUNED_WEIGHTS_FOLDER) -> list[str]:
    return folder_paths.get_filename_list(folder)


def extension_of(folder: str) -> str | None:
    return None if folder in KEEPS_NAMES else EXTENSION


def file_path(name: str, folder: str = TUNED_WEIGHTS_FOLDER, saving: bool = True) -> Path:
    """Where a file called `name` lies in the folder's first (default) path, never outside it. Saved files are
    safetensors (the extension is added); listed names are taken as they are in folders that keep them."""
    extension = EXTENSION if saving else extension_of(folder)
    return resolve_in_folder(folder_paths.get_folder_paths(folder)[0], name, extension)


def save_path(name: str, folder: str = TUNED_WEIGHTS_FOLDER) -> Path:
    """Where a new file called `name` goes, checked to be writable there: called before any work, so that a
    bad name never costs a finished tune."""
    path = file_path(name, folder)
    check_writable(path)
    return path


def existing_path(name: str, folder: str = TUNED_WEIGHTS_FOLDER, as_listed: bool = False) -> Path:
    """A file in one of the folder's paths (`as_listed`: the name is taken as it is, no extension added); a link
    that leads outside its folder is refused, saying so."""
    extension = None if as_listed else extension_of(folder)
    parts = name_parts(name, extension)
    paths = folder_paths.get_folder_paths(folder)
    for path in paths:
        if Path(path, *parts).is_file():
            return resolve_in_folder(path, name, extension)
    raise FileNotFoundError(f"no file named {name!r} in {', '.join(paths)}")


def save_tuned_weights(weights: TunedWeights, name: str, dtype: torch.dtype) -> Path:
    """Write TAV_WEIGHTS atomically into the tuneavideo folder; returns the file's path."""
    path = save_path(name)
    save_atomically(path, *to_file_contents(weights, dtype))
    return path


def save_as_comfy_lora(weights: TunedWeights, name: str, dtype: torch.dtype) -> tuple[Path, Path]:
    """The spatial part as a ComfyUI LoRA in models/loras/<name>, the rest (temporal layers, motion, the
    records) in models/tuneavideo/<name>, naming that LoRA; returns both paths. The LoRA is written first, so a
    failure between the two never leaves a temporal file pointing at no LoRA."""
    lora_path, rest_path = save_path(name, COMFY_LORA_FOLDER), save_path(name)
    save_atomically(lora_path, *comfy_lora_contents(weights, dtype))
    listed = lora_path.relative_to(Path(folder_paths.get_folder_paths(COMFY_LORA_FOLDER)[0]).resolve()).as_posix()
    save_atomically(rest_path, *to_file_contents(without_spatial_part(weights, listed), dtype))
    return lora_path, rest_path


def save_motion_lora(weights: TunedWeights, name: str, dtype: torch.dtype) -> Path:
    """Write the tuned motion LoRA alone, as an AnimateDiff motion-LoRA file, into animatediff_motion_lora."""
    path = save_path(name, MOTION_LORA_FOLDER)
    save_atomically(path, *motion_lora_file_contents(weights, dtype))
    return path


def load_tuned_weights(path: Path) -> TunedWeights:
    """The file's TunedWeights; a file that is not one (or is damaged) is a WeightsFileError saying what."""
    return from_file_contents(*load_safetensors(path))


def pack_weights_files() -> list[str]:
    """The pack's own tuned-weights files: the tuneavideo folders' safetensors but for reference UNets' weights."""
    return [name for name in listed_files(TUNED_WEIGHTS_FOLDER) if name.replace("\\", "/").split("/")[-1]
            not in WEIGHTS_NAMES]


def reference_unet_files() -> list[str]:
    """The original Tune-A-Video UNet weights files at any depth of the tuneavideo folders, named as listed."""
    names = set()
    for root in folder_paths.get_folder_paths(TUNED_WEIGHTS_FOLDER):
        for name in folder_paths.recursive_search(root, excluded_dir_names=[".git"])[0]:
            parts = name.replace("\\", "/").split("/")
            if parts[-1] in WEIGHTS_NAMES and not any(part.startswith(".") for part in parts):
                names.add("/".join(parts))
    return sorted(names)


def reference_unet_path(name: str) -> Path:
    """The weights file a reference-layout save called `name` writes: <name>/unet/diffusion_pytorch_model.safetensors
    in the tuneavideo folder (the pipeline folder the reference's from_pretrained(..., subfolder="unet") reads)."""
    root = folder_paths.get_folder_paths(TUNED_WEIGHTS_FOLDER)[0]
    return resolve_in_folder(root, f"{name.strip().rstrip('/')}/{REFERENCE_UNET_SUBFOLDER}/{WEIGHTS_NAMES[0]}", None)


def reference_save_path(name: str) -> Path:
    """reference_unet_path, checked to be writable: called before any work."""
    path = reference_unet_path(name)
    check_writable(path)
    return path


def save_reference_unet(name: str, tensors: dict[str, torch.Tensor], config: dict, dtype: torch.dtype) -> Path:
    """Write the unet folder (config.json + safetensors) whole or not at all; returns the weights file's path."""
    path = reference_save_path(name)

    def write(folder: Path) -> None:
        save_atomically(folder / path.name, {key: value.to(dtype) for key, value in tensors.items()}, {"format": "pt"})
        (folder / CONFIG_NAME).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")

    save_folder_atomically(path.parent, write)
    return path
