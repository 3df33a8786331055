"""TAV Sample: generate the edited video from the inverted noise with a new prompt."""

from comfy_api.latest import io

from ..comfy_glue.ddim_editing import sample_video
from ..comfy_glue.frame_windowing import check_window
from .common import CATEGORY, check_numbers, frame_window_inputs, validation_result

NODE = "TAV Sample"


class TAVSample(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="TAV_Sample",
            display_name=NODE,
            category=CATEGORY,
            description=(
                "DDIM-samples the edited video from DDIM Invert Video's output with the edited prompt and "
                "classifier-free guidance (the same inverted latent feeds both branches, as the reference). "
                "Given any other LATENT it samples text-to-video from fresh noise."
            ),
            inputs=[
                io.Model.Input("model", tooltip="The tuned (or inflated) video model."),
                io.Conditioning.Input("positive", tooltip="The edited caption, e.g. 'a man is skiing on Mars'."),
                io.Conditioning.Input("negative", tooltip="The negative prompt (the reference uses the empty one)."),
                io.Latent.Input(
                    "latent",
                    tooltip="DDIM Invert Video's output; any other LATENT (e.g. Empty Latent) means fresh noise.",
                ),
                io.Int.Input("steps", default=50, min=1, max=1000, tooltip="DDIM steps: the same as the inversion."),
                io.Float.Input(
                    "cfg", default=12.5, min=0.0, max=100.0, step=0.1, round=0.01,
                    tooltip="Guidance scale. 12.5 is the reference's value; ComfyUI users often prefer 7-10.",
                ),
                io.Float.Input(
                    "eta", default=0.0, min=0.0, max=1.0, step=0.01,
                    tooltip="0 = deterministic DDIM (keeps the source's structure best); up to 1 adds fresh noise.",
                ),
                io.Int.Input(
                    "seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF,
                    tooltip="Used when eta > 0, or when the latent is not an inversion (fresh noise).",
                ),
                *frame_window_inputs("sampling"),
            ],
            outputs=[io.Latent.Output(tooltip="The edited video's latents: connect VAEDecode.")],
        )

    @classmethod
    def check_inputs(cls, steps: int | None, cfg: float | None, eta: float | None, window: int | None,
                     overlap: int | None) -> None:
        check_numbers(cls, {"steps": steps, "cfg": cfg, "eta": eta})
        check_numbers(cls, {"window": window, "overlap": overlap})
        check_window(window, overlap, None, NODE)

    @classmethod
    def validate_inputs(cls, steps: int | None = None, cfg: float | None = None, eta: float | None = None,
                        window: int | None = None, overlap: int | None = None):
        return validation_result(lambda: cls.check_inputs(steps, cfg, eta, window, overlap))

    @classmethod
    def execute(cls, model, positive, negative, latent, steps: int, cfg: float, eta: float, seed: int,
                window: int = 0, overlap: int = 4):
        cls.check_inputs(steps, cfg, eta, window, overlap)
        return io.NodeOutput(
            sample_video(model, positive, negative, latent, steps, cfg, eta, seed, NODE, window, overlap)
        )
