"""Reading a weights file someone else wrote: safetensors directly, pickles only through torch's weights-only
loader (a file holding code is refused, never run), each failure a WeightsFileError saying what is wrong."""

import pickle
import zipfile
from pathlib import Path

import comfy.utils
import torch

from ..tav_core.weights_file import WeightsFileError, load_safetensors

SAFETENSORS_SUFFIXES = (".safetensors", ".sft")


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """A file's tensors: safetensors directly, anything else only through torch's weights-only loader."""
    if path.suffix.lower() in SAFETENSORS_SUFFIXES:
        return load_safetensors(path)[0]
    try:
        loaded = comfy.utils.load_torch_file(str(path), safe_load=True)
    except pickle.UnpicklingError as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise WeightsFileError(
            f"torch's weights-only loader refused it ({reason}): the file holds more than tensors, and this pack "
            "never unpickles code. Convert it to .safetensors with a tool you trust"
        ) from error
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, KeyError) as error:
        raise WeightsFileError(
            f"not a readable torch file ({path.stat().st_size} bytes; {type(error).__name__}: {error}): it may be "
            "truncated or damaged"
        ) from error
    tensors = {key: value for key, value in loaded.items() if isinstance(value, torch.Tensor)} if isinstance(
        loaded, dict) else {}
    if not tensors:
        raise WeightsFileError("it holds no tensors")
    return tensors
