"""TAV Save Tuned Weights and TAV Load Tuned Weights: one tune, many edits."""

from pathlib import Path

import torch
from comfy_api.latest import io

from ..comfy_glue.model_folders import (
    COMFY_LORA_FOLDER,
    MOTION_LORA_FOLDER,
    TUNED_WEIGHTS_FOLDER,
    existing_path,
    load_tuned_weights,
    pack_weights_files,
    reference_save_path,
    save_as_comfy_lora,
    save_motion_lora,
    save_path,
    save_reference_unet,
    save_tuned_weights,
)
from ..comfy_glue.reference_unet import reference_unet_contents
from ..comfy_glue.tuned_weights import load_onto
from ..tav_core.errors import TAVInputError
from ..tav_core.weights_file import WeightsFileError, file_signature
from .common import CATEGORY, MOTION_MODULE, SAVE_PRECISIONS, TUNED_WEIGHTS, validation_result
from .weights_in_prompt import (
    AS_COMFY_LORA_INPUT,
    MOTION_LORA_FORMAT,
    PACK_FORMAT,
    REFERENCE_FORMAT,
    refuse_save_and_load_together,
)

SAVE_NODE = "TAV Save Tuned Weights"
LOAD_NODE = "TAV Load Tuned Weights"


SAVE_FOLDERS = {
    PACK_FORMAT: TUNED_WEIGHTS_FOLDER, MOTION_LORA_FORMAT: MOTION_LORA_FOLDER, REFERENCE_FORMAT: TUNED_WEIGHTS_FOLDER,
}


def checked_save_path(node: str, name: str, folder: str = TUNED_WEIGHTS_FOLDER, format: str = PACK_FORMAT) -> Path:
    """The file a save_name writes, or the node's error saying why it cannot be written."""
    try:
        return reference_save_path(name) if format == REFERENCE_FORMAT else save_path(name, folder)
    except ValueError as error:
        raise TAVInputError(node, "save_name", f"{error}.") from error


class SaveTunedWeights(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="TAV_SaveTunedWeights",
            display_name=SAVE_NODE,
            category=CATEGORY,
            description=(
                "Saves One-Shot Tune's tuned parameters (to_q deltas and temporal layers, with a fingerprint of "
                "the base checkpoint) to models/tuneavideo/ as a small safetensors file."
            ),
            is_output_node=True,
            inputs=[
                TUNED_WEIGHTS.Input("tuned_weights", tooltip="The tuned_weights output of One-Shot Tune."),
                io.String.Input(
                    "save_name", default="clip",
                    tooltip=(
                        "File name inside the format's folder, models/tuneavideo/ (or models/animatediff_motion_lora/)"
                        "; '.safetensors' is added, '/' makes sub-folders."
                    ),
                ),
                io.Combo.Input(
                    "precision", options=list(SAVE_PRECISIONS), default="fp16",
                    tooltip="fp16 halves the file with no visible difference; fp32 keeps the tuned values exactly.",
                ),
                io.Combo.Input(
                    "format", options=list(SAVE_FOLDERS), default=PACK_FORMAT,
                    tooltip=(
                        "pack: everything tuned, to models/tuneavideo/ (for TAV Load Tuned Weights). "
                        "animatediff_motion_lora: the tuned motion LoRA alone, in AnimateDiff's motion-LoRA layout, "
                        "to models/animatediff_motion_lora/, where AnimateDiff-Evolved's and this pack's motion "
                        "LoRA loaders find it (tune with a motion module and motion_training lora). "
                        "reference: the whole tuned UNet as the original Tune-A-Video code writes it, a diffusers "
                        "folder models/tuneavideo/<save_name>/unet/ (config.json + diffusion_pytorch_model."
                        "safetensors) that its TuneAVideoPipeline loads with UNet3DConditionModel.from_pretrained and "
                        "TAV Load Tune-A-Video UNet reads (needs model; inflate with groupnorm per_video and "
                        "temporal_conv none)."
                    ),
                ),
                io.Model.Input(
                    "model", optional=True,
                    tooltip=(
                        "For format reference: the MODEL the weights were tuned on (One-Shot Tune's model input or "
                        "output), whose other UNet weights the folder holds too."
                    ),
                ),
                io.Boolean.Input(
                    AS_COMFY_LORA_INPUT, default=False, optional=True,
                    tooltip=(
                        "For format pack: write the to_q part as a standard ComfyUI LoRA, models/loras/<save_name>"
                        ".safetensors, which the stock LoraLoaderModelOnly applies (to share it, or stack it with "
                        "other LoRAs), and only the temporal part to models/tuneavideo/<save_name>.safetensors. To "
                        "use them: checkpoint -> LoraLoaderModelOnly (strength 1) -> TAV Load Tuned Weights."
                    ),
                ),
            ],
            outputs=[],
            hidden=[io.Hidden.prompt],
        )

    @classmethod
    def validate_inputs(
        cls, save_name: str | None = None, format: str | None = None, as_comfy_lora: bool | None = None
    ) -> bool | str:
        if save_name is None:
            return True
        return validation_result(lambda: cls.checked_paths(save_name, format or PACK_FORMAT, bool(as_comfy_lora)))

    @classmethod
    def checked_paths(cls, save_name: str, format: str, as_comfy_lora: bool) -> list[tuple[str, Path]]:
        """(folder, path) of every file the save writes, each checked to be writable; refuses as_comfy_lora with
        another format than pack."""
        if as_comfy_lora and format != PACK_FORMAT:
            raise TAVInputError(
                SAVE_NODE, AS_COMFY_LORA_INPUT, f"a ComfyUI LoRA is written with format pack, not {format}.",
                "Set format to pack, or turn as_comfy_lora off.",
            )
        folders = [SAVE_FOLDERS[format]] + ([COMFY_LORA_FOLDER] if as_comfy_lora else [])
        return [(folder, checked_save_path(SAVE_NODE, save_name, folder, format)) for folder in folders]

    @classmethod
    def execute(
        cls, tuned_weights, save_name: str, precision: str, format: str = PACK_FORMAT, model=None,
        as_comfy_lora: bool = False,
    ) -> io.NodeOutput:
        for folder, path in cls.checked_paths(save_name, format, as_comfy_lora):
            refuse_save_and_load_together(
                cls.hidden, SAVE_NODE, "save_name", save_name, saving=True, folder=folder,
                path=path if format == REFERENCE_FORMAT else None,
            )
        dtype = getattr(torch, SAVE_PRECISIONS[precision])
        if format == REFERENCE_FORMAT:
            if model is None:
                raise TAVInputError(
                    SAVE_NODE, "model", "format reference writes the whole UNet, so it needs the MODEL tuned on.",
                    "Connect One-Shot Tune's model input or output to model.",
                )
            save_reference_unet(save_name, *reference_unet_contents(model, tuned_weights, SAVE_NODE), dtype)
        elif format == MOTION_LORA_FORMAT:
            try:
                save_motion_lora(tuned_weights, save_name, dtype)
            except ValueError as error:
                raise TAVInputError(
                    SAVE_NODE, "tuned_weights", f"{error}.", "Save with format pack instead."
                ) from error
        elif as_comfy_lora:
            if tuned_weights.spatial_lora:
                raise TAVInputError(
                    SAVE_NODE, "tuned_weights",
                    f"these weights' to_q part is already the ComfyUI LoRA {tuned_weights.spatial_lora}.",
                    "Turn as_comfy_lora off to save the temporal part again.",
                )
            save_as_comfy_lora(tuned_weights, save_name, dtype)
        else:
            save_tuned_weights(tuned_weights, save_name, dtype)
        return io.NodeOutput()


def checked_weights_path(name: str) -> Path:
    """The listed file a weights_name reads, or the node's error saying why it cannot be read."""
    try:
        return existing_path(name)
    except (ValueError, FileNotFoundError) as error:
        raise TAVInputError(LOAD_NODE, "weights_name", f"{error}.") from error


class LoadTunedWeights(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="TAV_LoadTunedWeights",
            display_name=LOAD_NODE,
            category=CATEGORY,
            description=(
                "Applies saved One-Shot Tune weights to the checkpoint they were tuned on, giving the tuned video "
                "model again without re-tuning. An un-inflated MODEL is inflated with the recorded settings."
            ),
            inputs=[
                io.Model.Input("model", tooltip="The same base checkpoint's MODEL (inflated or not)."),
                io.Combo.Input(
                    "weights_name", options=pack_weights_files(),
                    tooltip="A file in models/tuneavideo/ written by One-Shot Tune or TAV Save Tuned Weights.",
                ),
                io.Boolean.Input(
                    "allow_mismatch", default=False,
                    tooltip=(
                        "Apply the weights even if the base UNet's weights (or the motion module) differ from the "
                        "ones tuned on."
                    ),
                ),
                MOTION_MODULE.Input(
                    "motion_module", optional=True,
                    tooltip=(
                        "For weights tuned with a motion module: the same module (TAV Load Motion Module), to "
                        "inflate an un-inflated MODEL with."
                    ),
                ),
            ],
            outputs=[
                io.Model.Output(display_name="model", tooltip="The tuned video model."),
                TUNED_WEIGHTS.Output(display_name="tuned_weights", tooltip="The loaded tuned parameters."),
            ],
            hidden=[io.Hidden.prompt],
        )

    @classmethod
    def validate_inputs(cls, weights_name: str | None = None) -> bool | str:
        return True if weights_name is None else validation_result(lambda: checked_weights_path(weights_name))

    @classmethod
    def fingerprint_inputs(cls, weights_name: str | None = None, **_other_inputs) -> object:
        """The file's size, time and inode: a file rewritten under the same name is loaded again."""
        if not isinstance(weights_name, str):
            return None
        try:
            return file_signature(existing_path(weights_name))
        except (ValueError, FileNotFoundError, OSError) as error:
            return str(error)

    @classmethod
    def execute(cls, model, weights_name: str, allow_mismatch: bool, motion_module=None) -> io.NodeOutput:
        path = checked_weights_path(weights_name)
        refuse_save_and_load_together(cls.hidden, LOAD_NODE, "weights_name", weights_name, saving=False)
        source = f"{weights_name} ({path})"
        try:
            weights = load_tuned_weights(path)
        except WeightsFileError as error:
            raise TAVInputError(LOAD_NODE, "weights_name", f"{source}: {error}.") from error
        tuned = load_onto(model, weights, allow_mismatch, LOAD_NODE, source, motion_module)
        return io.NodeOutput(tuned, weights)
