"""Tuned-weights files: safetensors only, written atomically, names confined to their folder."""

import os
import re
import tempfile
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

EXTENSION = ".safetensors"
_SAFE_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.\-]*$")


def resolve_in_folder(folder: str | os.PathLike, name: str) -> Path:
    """The path of `name` inside `folder`, refusing anything that could land elsewhere.

    Sub-folders are allowed ("clips/dog"); absolute paths, "..", hidden or odd characters are not.
    """
    cleaned = name.strip().replace("\\", "/")
    if not cleaned:
        raise ValueError("the name is empty")
    if not cleaned.endswith(EXTENSION):
        cleaned += EXTENSION
    parts = cleaned.split("/")
    if cleaned.startswith("/") or any(not _SAFE_PART.match(part) or part in (".", "..") for part in parts):
        raise ValueError(
            f"{name!r} is not a plain file name: use letters, digits, spaces, '_', '-', '.' and '/' for sub-folders"
        )
    root = Path(folder).resolve()
    path = (root / Path(*parts)).resolve()
    if root not in path.parents:
        raise ValueError(f"{name!r} would be written outside {root}")
    return path


def save_atomically(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """Write to a temporary file beside `path`, then rename: readers never see a partial file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    os.close(handle)
    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, temporary, metadata=metadata)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def load_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata; safetensors cannot execute code, unlike pickle."""
    with safe_open(str(path), framework="pt", device="cpu") as reader:
        metadata = reader.metadata() or {}
        tensors = {key: reader.get_tensor(key) for key in reader.keys()}
    return tensors, metadata
