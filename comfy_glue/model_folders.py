"""The models/tuneavideo folder, registered with ComfyUI's folder_paths (extra_model_paths.yaml aware)."""

import os
from pathlib import Path

import folder_paths
import torch

from ..tav_core.tuned_weights_file import TunedWeights, from_file_contents, to_file_contents
from ..tav_core.weights_file import (
    EXTENSION,
    check_writable,
    load_safetensors,
    name_parts,
    resolve_in_folder,
    save_atomically,
)

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


def default_folder_path(name: str) -> Path:
    """Where a file called `name` lies in the first (default) tuneavideo folder, never outside it."""
    return resolve_in_folder(folder_paths.get_folder_paths(TUNED_WEIGHTS_FOLDER)[0], name)


def save_path(name: str) -> Path:
    """Where a new file called `name` goes, checked to be writable there: called before any work, so that a
    bad name never costs a finished tune."""
    path = default_folder_path(name)
    check_writable(path)
    return path


def existing_path(name: str) -> Path:
    """A file in one of the tuneavideo folders; a link that leads outside its folder is refused, saying so."""
    parts = name_parts(name)
    folders = folder_paths.get_folder_paths(TUNED_WEIGHTS_FOLDER)
    for folder in folders:
        if Path(folder, *parts).is_file():
            return resolve_in_folder(folder, name)
    raise FileNotFoundError(f"no tuned weights named {name!r} in {', '.join(folders)}")


def save_tuned_weights(weights: TunedWeights, name: str, dtype: torch.dtype) -> Path:
    """Write TAV_WEIGHTS atomically into the tuneavideo folder; returns the file's path."""
    path = save_path(name)
    save_atomically(path, *to_file_contents(weights, dtype))
    return path


def load_tuned_weights(path: Path) -> TunedWeights:
    """The file's TunedWeights; a file that is not one (or is damaged) is a WeightsFileError saying what."""
    return from_file_contents(*load_safetensors(path))
