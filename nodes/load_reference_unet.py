"""TAV Load Tune-A-Video UNet: a checkpoint tuned with the original showlab/Tune-A-Video code, as a video MODEL."""

from pathlib import Path

from comfy_api.latest import io

from ..comfy_glue.model_folders import existing_path, reference_unet_files
from ..comfy_glue.reference_unet import load_reference_unet
from ..tav_core.errors import TAVInputError
from ..tav_core.reference_unet import CONFIG_NAME, ReferenceConfigError, read_config
from ..tav_core.weights_file import file_signature
from .common import CATEGORY, validation_result
from .weights_in_prompt import refuse_save_and_load_together

NODE = "TAV Load Tune-A-Video UNet"


def checked_path(name: str) -> Path:
    """The listed weights file `name`, or the node's error saying why it cannot be read."""
    try:
        return existing_path(name, as_listed=True)
    except (ValueError, FileNotFoundError) as error:
        raise TAVInputError(NODE, "unet_name", f"{error}.") from error


class LoadReferenceUNet(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="TAV_LoadReferenceUNet",
            display_name=NODE,
            category=CATEGORY,
            description=(
                "Loads a UNet tuned with the original Tune-A-Video code (a diffusers unet/ folder: config.json and "
                "diffusion_pytorch_model.safetensors or .bin) onto the SD checkpoint it was tuned from, inflated "
                "exactly as the reference ran it: sparse-causal attention, GroupNorm pooled per video, its temporal "
                "layers, no position encoding. Feed it to DDIM Invert Video and TAV Sample."
            ),
            inputs=[
                io.Model.Input(
                    "model",
                    tooltip=(
                        "The MODEL of the SD checkpoint the video was tuned from (not inflated); use its CLIP and "
                        "VAE for the prompts and frames. Its sampling (eps or v) is kept; every UNet weight comes "
                        "from the file."
                    ),
                ),
                io.Combo.Input(
                    "unet_name", options=reference_unet_files(),
                    tooltip=(
                        "A diffusion_pytorch_model.safetensors (or .bin, read with torch's weights-only loader, never "
                        "unpickled) at any depth of models/tuneavideo/, e.g. man-skiing/unet/..., with the "
                        "config.json diffusers wrote beside it."
                    ),
                ),
            ],
            outputs=[io.Model.Output(display_name="model", tooltip="The tuned video model.")],
            hidden=[io.Hidden.prompt],
        )

    @classmethod
    def validate_inputs(cls, unet_name: str | None = None) -> bool | str:
        return True if unet_name is None else validation_result(lambda: checked_path(unet_name))

    @classmethod
    def fingerprint_inputs(cls, unet_name: str | None = None, **_other_inputs) -> object:
        """The weights file's and config's size, time and inode: a checkpoint replaced in place is loaded again."""
        if not isinstance(unet_name, str):
            return None
        try:
            path = existing_path(unet_name, as_listed=True)
            config = path.with_name(CONFIG_NAME)
            return file_signature(path), file_signature(config) if config.is_file() else None
        except (ValueError, FileNotFoundError, OSError) as error:
            return str(error)

    @classmethod
    def execute(cls, model, unet_name: str) -> io.NodeOutput:
        path = checked_path(unet_name)
        refuse_save_and_load_together(cls.hidden, NODE, "unet_name", unet_name, saving=False, path=path)
        source = f"{unet_name} ({path})"
        try:
            config = read_config(path)
        except ReferenceConfigError as error:
            raise TAVInputError(NODE, "unet_name", f"{source}: {error}.") from error
        return io.NodeOutput(load_reference_unet(model, config, path, NODE, source))
