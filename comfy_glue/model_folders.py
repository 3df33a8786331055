"""The models/tuneavideo folder, registered with ComfyUI's folder_paths (extra_model_paths.yaml aware)."""

import os
from pathlib import Path

import folder_paths
import torch

from ..tav_core.weights_file import EXTENSION, load_safetensors, resolve_in_folder, save_atomically
from .tuned_weights import TunedWeights, from_file_contents, to_file_contents

TUNED_WEIGHTS_FOLDER = "tuneavideo"


def register_folders() -> None:
    """Add models/tuneavideo, after any paths extra_model_paths.yaml already gave (its default stays first)."""
    default = os.path.join(folder_paths.models_dir, TUNED_WEIGHTS_FOLDER)
    folder_paths.add_model_folder_path(TUNED_WEIGHTS_FOLDER, default)
    paths, _ = folder_paths.folder_names_and_paths[TUNED_WEIGHTS_FOLDER]
    folder_paths.folder_names_and_paths[TUNED_WEIGHTS_FOLDER] = (paths, {EXTENSION})


register_folders()


def tuned_weights_files() -> list[str]:
    return folder_paths.get_filename_list(TUNED_WEIGHTS_FOLDER)


def save_path(name: str) -> Path:
    """Where a new file called `name` goes: inside the first (default) tuneavideo folder, never outside."""
    return resolve_in_folder(folder_paths.get_folder_paths(TUNED_WEIGHTS_FOLDER)[0], name)


def existing_path(name: str) -> Path:
    """A listed file, re-checked to lie inside one of the tuneavideo folders."""
    for folder in folder_paths.get_folder_paths(TUNED_WEIGHTS_FOLDER):
        try:
            path = resolve_in_folder(folder, name)
        except ValueError:
            continue
        if path.is_file():
            return path
    folders = folder_paths.get_folder_paths(TUNED_WEIGHTS_FOLDER)
    raise FileNotFoundError(f"no tuned weights named {name!r} in {', '.join(folders)}")


def save_tuned_weights(weights: TunedWeights, name: str, dtype: torch.dtype) -> Path:
    """Write TAV_WEIGHTS atomically into the tuneavideo folder; returns the file's path."""
    path = save_path(name)
    tensors, metadata = to_file_contents(weights, dtype)
    save_atomically(path, tensors, metadata)
    return path


def load_tuned_weights(name: str) -> TunedWeights:
    tensors, metadata = load_safetensors(existing_path(name))
    return from_file_contents(tensors, metadata)
