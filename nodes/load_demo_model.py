"""TAV Load Demo Model: the pack's own toy text-to-image model of the shapes world."""

from comfy_api.latest import io

from ..comfy_glue.demo_model import DEMO_MODEL_FILE, load_demo_model
from ..tav_core.weights_file import file_signature
from .common import CATEGORY

NODE = "TAV Load Demo Model"


class LoadDemoModel(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="TAV_LoadDemoModel",
            display_name=NODE,
            category=CATEGORY,
            description=(
                "A toy model for demos and tests, trained by this pack on a synthetic 'shapes world': 64x64 "
                "images of one circle, square or triangle (red, green, blue, yellow, purple, orange) on a white, "
                "black, gray or blue background, captioned 'a red circle on a white background'. It is not a "
                "general image model; use it to try Tune-A-Video end to end without downloading a checkpoint."
            ),
            inputs=[],
            outputs=[
                io.Model.Output(display_name="MODEL", tooltip="SD1.x-style UNet (epsilon, SD's noise schedule)."),
                io.Clip.Output(display_name="CLIP", tooltip="Small text encoder with the stock SD1 tokenizer."),
                io.Vae.Output(display_name="VAE", tooltip="8x autoencoder for 64x64 frames (4 latent channels)."),
            ],
        )

    @classmethod
    def fingerprint_inputs(cls) -> object:
        """The file's size, time and inode: a retrained demo model is loaded again."""
        return file_signature(DEMO_MODEL_FILE) if DEMO_MODEL_FILE.is_file() else None

    @classmethod
    def execute(cls) -> io.NodeOutput:
        if not DEMO_MODEL_FILE.is_file():
            raise FileNotFoundError(
                f"{NODE}: the demo model file {DEMO_MODEL_FILE} is missing; run tools/train_demo_model.py"
            )
        return io.NodeOutput(*load_demo_model(DEMO_MODEL_FILE))
