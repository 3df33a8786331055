"""TAV Load Motion Module: an AnimateDiff motion module (and optionally a motion LoRA) from the user's folders."""

from pathlib import Path

from comfy_api.latest import io

from ..comfy_glue.model_folders import MOTION_LORA_FOLDER, MOTION_MODULES_FOLDER, existing_path, listed_files
from ..comfy_glue.motion_loading import load_motion_module, with_motion_lora
from ..tav_core.errors import TAVInputError
from ..tav_core.weights_file import WeightsFileError, file_signature
from .common import CATEGORY, MOTION_MODULE, check_numbers, validation_result
from .weights_in_prompt import refuse_save_and_load_together

NODE = "TAV Load Motion Module"
NO_LORA = "none"


def checked_path(input_name: str, name: str, folder: str) -> Path:
    try:
        return existing_path(name, folder)
    except (ValueError, FileNotFoundError) as error:
        raise TAVInputError(NODE, input_name, f"{error}.") from error


class LoadMotionModule(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="TAV_LoadMotionModule",
            display_name=NODE,
            category=CATEGORY,
            description=(
                "Loads an AnimateDiff motion module (v1, v2, v3, AnimateLCM-style, SDXL or HotshotXL: the version is "
                "read from the file) from models/animatediff_models/, the folder AnimateDiff-Evolved uses, with an "
                "optional motion LoRA. Connect it to Inflate UNet's motion_module input."
            ),
            inputs=[
                io.Combo.Input(
                    "motion_module", options=listed_files(MOTION_MODULES_FOLDER),
                    tooltip=(
                        "A motion module in models/animatediff_models/, e.g. mm_sd_v15_v2.safetensors or "
                        "v3_sd15_mm.ckpt (.ckpt files are read with torch's weights-only loader, never unpickled)."
                    ),
                ),
                io.Combo.Input(
                    "motion_lora", options=[NO_LORA, *listed_files(MOTION_LORA_FOLDER)], default=NO_LORA,
                    tooltip=(
                        "Optional motion LoRA from models/animatediff_motion_lora/ (AnimateDiff v2's camera-motion "
                        "LoRAs, MotionDirector's, or one saved by TAV Save Tuned Weights) for this module's version."
                    ),
                ),
                io.Float.Input(
                    "lora_strength", default=1.0, min=-10.0, max=10.0, step=0.05,
                    tooltip="How strongly the motion LoRA is applied (1 = as trained).",
                ),
            ],
            outputs=[MOTION_MODULE.Output(display_name="motion_module", tooltip="For Inflate UNet's motion_module.")],
            hidden=[io.Hidden.prompt],
        )

    @classmethod
    def check_inputs(cls, motion_module: str | None, motion_lora: str | None, lora_strength: float | None) -> None:
        check_numbers(cls, {"lora_strength": lora_strength})
        if motion_module is not None:
            checked_path("motion_module", motion_module, MOTION_MODULES_FOLDER)
        if motion_lora is not None and motion_lora != NO_LORA:
            checked_path("motion_lora", motion_lora, MOTION_LORA_FOLDER)

    @classmethod
    def validate_inputs(
        cls, motion_module: str | None = None, motion_lora: str | None = None, lora_strength: float | None = None
    ) -> bool | str:
        return validation_result(lambda: cls.check_inputs(motion_module, motion_lora, lora_strength))

    @classmethod
    def fingerprint_inputs(cls, motion_module: str | None = None, motion_lora: str | None = None, **_other) -> object:
        """Both files' size, time and inode: a file replaced under the same name is loaded again."""
        signatures = []
        for name, folder in ((motion_module, MOTION_MODULES_FOLDER), (motion_lora, MOTION_LORA_FOLDER)):
            if not isinstance(name, str) or name == NO_LORA:
                signatures.append(None)
                continue
            try:
                signatures.append(file_signature(existing_path(name, folder)))
            except (ValueError, FileNotFoundError, OSError) as error:
                signatures.append(str(error))
        return tuple(signatures)

    @classmethod
    def execute(cls, motion_module: str, motion_lora: str = NO_LORA, lora_strength: float = 1.0) -> io.NodeOutput:
        cls.check_inputs(motion_module, motion_lora, lora_strength)
        path = checked_path("motion_module", motion_module, MOTION_MODULES_FOLDER)
        lora_path = None
        if motion_lora != NO_LORA:
            lora_path = checked_path("motion_lora", motion_lora, MOTION_LORA_FOLDER)
            refuse_save_and_load_together(
                cls.hidden, NODE, "motion_lora", motion_lora, saving=False, folder=MOTION_LORA_FOLDER
            )
        try:
            motion = load_motion_module(path, motion_module)
        except WeightsFileError as error:
            raise TAVInputError(NODE, "motion_module", f"{motion_module} ({path}): {error}.") from error
        if lora_path is not None:
            try:
                motion = with_motion_lora(motion, lora_path, motion_lora, lora_strength)
            except WeightsFileError as error:
                raise TAVInputError(NODE, "motion_lora", f"{motion_lora} ({lora_path}): {error}.") from error
        return io.NodeOutput(motion)
