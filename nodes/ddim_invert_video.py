"""DDIM Invert Video: the source video's latents -> the structured noise that carries its motion."""

from comfy_api.latest import io

from ..comfy_glue.ddim_editing import invert_video
from ..comfy_glue.frame_windowing import check_window
from .common import CATEGORY, check_numbers, frame_window_inputs, validation_result

NODE = "DDIM Invert Video"


class DDIMInvertVideo(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="TAV_DDIMInvertVideo",
            display_name=NODE,
            category=CATEGORY,
            description=(
                "Runs DDIM backwards (the reference's inversion: timesteps 1, 21, ..., 981 for 50 steps, no "
                "guidance) from the source video's latents to noise. Sampling that noise with an edited prompt "
                "(TAV Sample) keeps the source's layout and motion. Works for epsilon and v-prediction models."
            ),
            inputs=[
                io.Model.Input("model", tooltip="The inflated (and ideally One-Shot-tuned) video model."),
                io.Latent.Input("latents", tooltip="The source video's frames from VAEEncode (batch = frames)."),
                io.Conditioning.Input(
                    "conditioning",
                    tooltip="The inversion prompt. The paper uses the empty prompt: connect CLIPTextEncode with ''.",
                ),
                io.Int.Input(
                    "steps", default=50, min=1, max=1000,
                    tooltip="DDIM steps of the full schedule (ddim_uniform). Sample with the same number.",
                ),
                io.Float.Input(
                    "inversion_strength", default=1.0, min=0.01, max=1.0, step=0.01,
                    tooltip=(
                        "Fraction of the schedule to invert. 1.0 inverts to pure noise (the paper); lower values "
                        "stop earlier, keeping more of the source and leaving less room for the edit."
                    ),
                ),
                *frame_window_inputs("the inversion"),
            ],
            outputs=[
                io.Latent.Output(
                    display_name="inverted_latent",
                    tooltip=(
                        "The inverted noise, with its settings recorded. Feed it to TAV Sample (or KSamplerAdvanced "
                        "with add_noise disable, ddim, ddim_uniform, the same steps and the recorded start step)."
                    ),
                )
            ],
        )

    @classmethod
    def check_inputs(cls, steps: int | None, inversion_strength: float | None, window: int | None,
                     overlap: int | None) -> None:
        check_numbers(cls, {"steps": steps, "inversion_strength": inversion_strength})
        check_numbers(cls, {"window": window, "overlap": overlap})
        check_window(window, overlap, None, NODE)

    @classmethod
    def validate_inputs(cls, steps: int | None = None, inversion_strength: float | None = None,
                        window: int | None = None, overlap: int | None = None):
        return validation_result(lambda: cls.check_inputs(steps, inversion_strength, window, overlap))

    @classmethod
    def execute(cls, model, latents, conditioning, steps: int, inversion_strength: float, window: int = 0,
                overlap: int = 4) -> io.NodeOutput:
        cls.check_inputs(steps, inversion_strength, window, overlap)
        return io.NodeOutput(
            invert_video(model, latents, conditioning, steps, inversion_strength, NODE, window, overlap)
        )
