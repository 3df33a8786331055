"""The pack's model folders, registered with ComfyUI's folder_paths (extra_model_paths.yaml aware):
models/tuneavideo for tuned weights, and AnimateDiff-Evolved's folders for motion modules and motion LoRAs."""

import os
from pathlib import Path

import folder_paths
import torch

from ..tav_core.tuned_weights_file import TunedWeights, from_file_contents, motion_lora_file_contents, to_file_contents
from ..tav_core.weights_file import (
    EXTENSION,
    check_writable,
    load_safetensors,
    name_parts,
    resolve_in_folder,
    save_atomically,
)

TUNED_WEIGHTS_FOLDER = "tuneavideo"
MOTION_MODULES_FOLDER = "animatediff_models"
MOTION_LORA_FOLDER = "animatediff_motion_lora"
# Names are kept as listed (no extension added) in these folders, whose files may be .ckpt or .pt too.
KEEPS_NAMES = (MOTION_MODULES_FOLDER, MOTION_LORA_FOLDER)


def register_folder(folder: str, extensions: set[str]) -> None:
    """Add models/<folder>, after any paths extra_model_paths.yaml (or another pack) already gave."""
    folder_paths.add_model_folder_path(folder, os.path.join(folder_paths.models_dir, folder))
    paths, known = folder_paths.folder_names_and_paths[folder]
    shared = folder in KEEPS_NAMES  # AnimateDiff-Evolved lists the same folders: keep what it accepts
    folder_paths.folder_names_and_paths[folder] = (paths, set(known) | extensions if shared else extensions)


register_folder(TUNED_WEIGHTS_FOLDER, {EXTENSION})
for _folder in KEEPS_NAMES:
    register_folder(_folder, set(folder_paths.supported_pt_extensions))


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


def existing_path(name: str, folder: str = TUNED_WEIGHTS_FOLDER) -> Path:
    """A file in one of the folder's paths; a link that leads outside its folder is refused, saying so."""
    parts = name_parts(name, extension_of(folder))
    paths = folder_paths.get_folder_paths(folder)
    for path in paths:
        if Path(path, *parts).is_file():
            return resolve_in_folder(path, name, extension_of(folder))
    raise FileNotFoundError(f"no file named {name!r} in {', '.join(paths)}")


def save_tuned_weights(weights: TunedWeights, name: str, dtype: torch.dtype) -> Path:
    """Write TAV_WEIGHTS atomically into the tuneavideo folder; returns the file's path."""
    path = save_path(name)
    save_atomically(path, *to_file_contents(weights, dtype))
    return path


def save_motion_lora(weights: TunedWeights, name: str, dtype: torch.dtype) -> Path:
    """Write the tuned motion LoRA alone, as an AnimateDiff motion-LoRA file, into animatediff_motion_lora."""
    path = save_path(name, MOTION_LORA_FOLDER)
    save_atomically(path, *motion_lora_file_contents(weights, dtype))
    return path


def load_tuned_weights(path: Path) -> TunedWeights:
    """The file's TunedWeights; a file that is not one (or is damaged) is a WeightsFileError saying what."""
    return from_file_contents(*load_safetensors(path))
