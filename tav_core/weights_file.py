"""Weights files: safetensors only, written atomically, names confined to their folder."""

import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

EXTENSION = ".safetensors"
_SAFE_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.\-]*$")
# save_atomically writes ".<name>.<8 random>.partial" beside the file; 255 bytes is the usual file-name limit.
MAX_PART_BYTES = 255 - len("..12345678.partial")
MAX_NAME_CHARS = 1024


MISMATCHES_NAMED = 3


class WeightsFileError(ValueError):
    """A weights file that cannot be read as what it claims to be; the message says what is wrong."""


def name_parts(name: str, extension: str | None = EXTENSION) -> list[str]:
    """The folder and file parts of a workflow-given name (`extension` added where missing; None: the name as it
    is), refusing anything that could land elsewhere or not be written: absolute paths, '..', empty parts, hidden
    or odd characters, over-long names.
    """
    cleaned = name.strip().replace("\\", "/")
    shown = repr(name if len(name) <= 60 else name[:57] + "...")
    if not cleaned:
        raise ValueError("the name is empty")
    if len(cleaned) > MAX_NAME_CHARS:
        raise ValueError(f"the name is {len(cleaned)} characters long; keep it under {MAX_NAME_CHARS}")
    if cleaned.startswith("/"):
        raise ValueError(f"{shown} is an absolute path: give a name inside the folder, e.g. 'clips/dog'")
    parts = cleaned.split("/")
    if extension and parts[-1] and not parts[-1].endswith(extension):
        parts[-1] += extension
    for part in parts:
        if not part:
            raise ValueError(f"{shown} has an empty folder name (a leading, trailing or doubled '/')")
        if part in (".", "..") or not _SAFE_PART.match(part):
            raise ValueError(
                f"{shown} is not a plain file name: use letters, digits, spaces, '_', '-', '.' "
                "(not first) and '/' for sub-folders"
            )
        if len(part.encode()) > MAX_PART_BYTES:
            raise ValueError(
                f"{shown} has a part of {len(part.encode())} bytes; each file or folder name can have at most "
                f"{MAX_PART_BYTES}"
            )
    return parts


def resolve_in_folder(folder: str | os.PathLike, name: str, extension: str | None = EXTENSION) -> Path:
    """The real path of `name` inside `folder`; a name (or a link on its way) that leads outside is refused.

    Sub-folders are allowed ("clips/dog").
    """
    root = Path(folder).resolve()
    path = (root / Path(*name_parts(name, extension))).resolve()
    if root not in path.parents:
        raise ValueError(
            f"{name!r} leads outside {root} (to {path}, through a link): files are read and written only "
            "inside the folder; copy the file there, or add its folder to extra_model_paths.yaml"
        )
    return path


def check_writable(path: Path) -> None:
    """Refuse, before any work, a target that cannot become a file: a folder, or a file inside a file."""
    if path.is_dir():
        raise ValueError(f"{path} is a folder, so no file can be saved under that name")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"{parent} is a file, so no sub-folder can be made there")
            break


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
    """Tensors and metadata; safetensors cannot execute code, unlike pickle.

    A file that is no valid safetensors file (empty, truncated, random bytes, a corrupt header) is a
    WeightsFileError saying so.
    """
    try:
        with safe_open(str(path), framework="pt", device="cpu") as reader:
            metadata = reader.metadata() or {}
            tensors = {key: reader.get_tensor(key) for key in reader.keys()}
    except SafetensorError as error:
        size = path.stat().st_size
        raise WeightsFileError(
            f"not a readable safetensors file ({size} bytes; {error}): it may be truncated or not a weights file"
        ) from error
    return tensors, metadata


def file_signature(path: Path) -> tuple[str, int, int, int]:
    """What changes whenever the file at `path` is replaced or rewritten: for ComfyUI's cache."""
    stat = path.stat()
    return str(path), stat.st_size, stat.st_mtime_ns, stat.st_ino


def save_folder_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """Fill a temporary folder beside `path` with `write`, then put it in place of `path`: readers see the old
    folder or the new one, never a half-written one, and a failed save leaves nothing behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent))
    old = None
    try:
        write(temporary)
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
            os.replace(path, old / path.name)
        os.replace(temporary, path)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        if old is not None and (old / path.name).exists() and not path.exists():
            os.replace(old / path.name, path)
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def shape_mismatches(expected: dict[str, torch.Size], given: dict[str, torch.Tensor | tuple[int, ...]]) -> list[str]:
    """Missing, unexpected and wrongly shaped entries (tensors, or their shapes), named."""
    shapes = {key: tuple(getattr(value, "shape", value)) for key, value in given.items()}
    problems = [f"no {key}" for key in sorted(set(expected) - set(shapes))]
    problems += [f"unexpected {key}" for key in sorted(set(shapes) - set(expected))]
    problems += [
        f"{key} is {shapes[key]}, the model's is {tuple(shape)}"
        for key, shape in sorted(expected.items()) if key in shapes and shapes[key] != tuple(shape)
    ]
    return problems


def in_brief(problems: list[str]) -> str:
    """'<count> problems: <the first few>', for an error message."""
    return f"{len(problems)} problems: {'; '.join(problems[:MISMATCHES_NAMED])}"
