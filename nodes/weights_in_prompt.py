"""One prompt that both saves and loads the same weights file cannot be run safely: ComfyUI orders
nodes only by their links, so the load could read the file from before the save. Whichever of the two
runs first refuses the prompt, before any tuning."""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from comfy_api.latest import io

from ..comfy_glue.model_folders import (
    COMFY_LORA_FOLDER,
    MOTION_LORA_FOLDER,
    TUNED_WEIGHTS_FOLDER,
    existing_path,
    file_path,
    reference_unet_path,
)
from ..tav_core.errors import TAVInputError

SAVE_FORMAT_INPUT = "format"
AS_COMFY_LORA_INPUT = "as_comfy_lora"  # TAV Save Tuned Weights also writes models/loras/<save_name>
PACK_FORMAT = "pack"
MOTION_LORA_FORMAT = "animatediff_motion_lora"
REFERENCE_FORMAT = "reference"


@dataclass(frozen=True)
class FileInput:
    """A node input that names a file of `folder`, when the node's `format` input (if any) is `format`."""

    class_type: str
    input_name: str
    folder: str
    saving: bool
    format: str | None = None
    locate: Callable[[str], Path] | None = None  # where the name points, if not file_path's answer

    def path_in(self, node: dict) -> Path | None:
        inputs = node.get("inputs", {})
        if node.get("class_type") != self.class_type:
            return None
        if self.format is not None and inputs.get(SAVE_FORMAT_INPUT, PACK_FORMAT) != self.format:
            return None
        name = inputs.get(self.input_name)
        if not isinstance(name, str) or not name.strip():
            return None  # linked, or no file
        try:
            return self.locate(name) if self.locate else file_path(name, self.folder, self.saving)
        except (ValueError, FileNotFoundError):
            return None


FILE_INPUTS = (
    FileInput("TAV_OneShotTune", "save_name", TUNED_WEIGHTS_FOLDER, saving=True),
    FileInput("TAV_SaveTunedWeights", "save_name", TUNED_WEIGHTS_FOLDER, saving=True, format=PACK_FORMAT),
    FileInput("TAV_SaveTunedWeights", "save_name", MOTION_LORA_FOLDER, saving=True, format=MOTION_LORA_FORMAT),
    FileInput("TAV_LoadTunedWeights", "weights_name", TUNED_WEIGHTS_FOLDER, saving=False),
    FileInput("TAV_LoadMotionModule", "motion_lora", MOTION_LORA_FOLDER, saving=False),
    FileInput("LoraLoader", "lora_name", COMFY_LORA_FOLDER, saving=False),
    FileInput("LoraLoaderModelOnly", "lora_name", COMFY_LORA_FOLDER, saving=False),
    FileInput(
        "TAV_SaveTunedWeights", "save_name", TUNED_WEIGHTS_FOLDER, saving=True, format=REFERENCE_FORMAT,
        locate=reference_unet_path,
    ),
    FileInput(
        "TAV_LoadReferenceUNet", "unet_name", TUNED_WEIGHTS_FOLDER, saving=False,
        locate=lambda name: existing_path(name, as_listed=True),
    ),
)


def refuse_save_and_load_together(
    hidden: io.HiddenHolder | None, node: str, input_name: str, name: str, saving: bool,
    folder: str = TUNED_WEIGHTS_FOLDER, path: Path | None = None,
) -> None:
    """Raise if this prompt also loads (when saving) or saves (when loading) the file `name` of `folder` (or the
    file at `path`, for names that do not follow file_path)."""
    prompt = getattr(hidden, "prompt", None)  # the whole prompt, when ComfyUI runs the node
    if not prompt or not name.strip():
        return
    path = path or file_path(name, folder, saving)
    others = [
        f"node {node_id} ({other['class_type']})"
        for node_id, other in prompt.items()
        for file_input in FILE_INPUTS
        if file_input.saving != saving and file_input.path_in(other) == path
    ]
    if others:
        raise TAVInputError(
            node, input_name,
            f"this prompt also {'loads' if saving else 'saves'} {path.name} ({', '.join(others)}), and ComfyUI "
            "does not order the two, so the load could read the file from before the save.",
            "Connect the tuned MODEL directly, or save in one prompt and load in a later one.",
        )
