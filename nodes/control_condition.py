"""ControlNet/T2I-Adapter Condition: one structural hint per video frame, for the edit."""

import torch
from comfy_api.latest import io

from ..comfy_glue.video_control import apply_video_control
from ..tav_core.errors import TAVInputError
from ..tav_core.hint_preprocessors import HintSettings, Preprocessor, compute_hints
from .common import CATEGORY, check_numbers, validation_result

NODE = "ControlNet/T2I-Adapter Condition"
PREPROCESSOR_HELP = (
    "How hints are made from the frames (OpenCV, no downloads). none: the frames already are hints (depth, pose, "
    "any ready hint video). canny: Canny edges, for canny ControlNets / T2I-Adapters. soft_edge: normalised Sobel "
    "edges, for softedge/HED ControlNets. scribble: thick binary edges, for scribble ControlNets and sketch "
    "T2I-Adapters. lineart: adaptive-threshold lines, for lineart ControlNets. color: block colour palette, for the "
    "T2I-Adapter color model. tile: a low-resolution copy, for tile/blur ControlNets."
)


class ControlCondition(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="TAV_ControlCondition",
            display_name=NODE,
            category=CATEGORY,
            description=(
                "Attaches a ControlNet or T2I-Adapter (from the stock ControlNet loader) to the edit's conditioning "
                "with one hint per video frame, so the edited video follows the source's structure frame by frame "
                "with no extra training. Hint k conditions latent frame k in every cond/uncond batch and context "
                "window; a single hint applies to all frames. Chains with other ControlNet nodes."
            ),
            inputs=[
                io.Conditioning.Input("positive", tooltip="The edited prompt's conditioning."),
                io.Conditioning.Input("negative", tooltip="The negative conditioning."),
                io.ControlNet.Input("control_net", tooltip="A ControlNet or T2I-Adapter from Load ControlNet Model."),
                io.Image.Input(
                    "frames",
                    tooltip="The source frames (the same ones that were encoded), or a ready hint video, or one image.",
                ),
                io.Combo.Input(
                    "preprocessor", options=[p.value for p in Preprocessor], default=Preprocessor.CANNY.value,
                    tooltip=PREPROCESSOR_HELP,
                ),
                io.Float.Input(
                    "strength", default=1.0, min=0.0, max=10.0, step=0.01,
                    tooltip="How strongly the hints steer the model (0 disables this control).",
                ),
                io.Float.Input(
                    "start_percent", default=0.0, min=0.0, max=1.0, step=0.001,
                    tooltip="Fraction of the sampling at which the control starts.",
                ),
                io.Float.Input(
                    "end_percent", default=1.0, min=0.0, max=1.0, step=0.001,
                    tooltip="Fraction of the sampling at which the control stops.",
                ),
                io.Int.Input(
                    "low_threshold", default=100, min=0, max=255,
                    tooltip="canny and scribble: the lower Canny hysteresis threshold (0-255 grey levels).",
                ),
                io.Int.Input(
                    "high_threshold", default=200, min=0, max=255,
                    tooltip="canny and scribble: the upper Canny hysteresis threshold (0-255 grey levels).",
                ),
                io.Int.Input(
                    "line_thickness", default=3, min=1, max=32,
                    tooltip="scribble: stroke width in pixels.",
                ),
                io.Int.Input(
                    "block_size", default=64, min=8, max=512, step=8,
                    tooltip=(
                        "color: palette cell size in pixels (the T2I color adapter uses 64). tile: the low-res copy "
                        "keeps one pixel per block_size/8. lineart: the local threshold window grows with it."
                    ),
                ),
                io.Vae.Input(
                    "vae", optional=True,
                    tooltip="Only for ControlNets that need a VAE (as the stock Apply ControlNet node).",
                ),
            ],
            outputs=[
                io.Conditioning.Output(display_name="positive", tooltip="Positive conditioning with the control."),
                io.Conditioning.Output(display_name="negative", tooltip="Negative conditioning with the control."),
                io.Image.Output(display_name="hints", tooltip="The hint frames the model is given, to look at."),
            ],
        )

    @classmethod
    def check_inputs(cls, **numbers: float | int | None) -> None:
        check_numbers(cls, numbers)
        start, end = numbers.get("start_percent"), numbers.get("end_percent")
        if start is not None and end is not None and start > end:
            raise TAVInputError(NODE, "start_percent", f"{start} is after end_percent {end}.")

    @classmethod
    def validate_inputs(
        cls, strength: float | None = None, start_percent: float | None = None, end_percent: float | None = None,
        low_threshold: int | None = None, high_threshold: int | None = None, line_thickness: int | None = None,
        block_size: int | None = None,
    ) -> bool | str:
        return validation_result(lambda: cls.check_inputs(
            strength=strength, start_percent=start_percent, end_percent=end_percent, low_threshold=low_threshold,
            high_threshold=high_threshold, line_thickness=line_thickness, block_size=block_size,
        ))

    @classmethod
    def execute(
        cls, positive, negative, control_net, frames, preprocessor: str, strength: float, start_percent: float,
        end_percent: float, low_threshold: int, high_threshold: int, line_thickness: int, block_size: int,
        vae=None,
    ) -> io.NodeOutput:
        cls.check_inputs(
            strength=strength, start_percent=start_percent, end_percent=end_percent, low_threshold=low_threshold,
            high_threshold=high_threshold, line_thickness=line_thickness, block_size=block_size,
        )
        if frames.ndim != 4 or frames.shape[-1] < 3:
            raise TAVInputError(
                NODE, "frames", f"expected an IMAGE batch (frames, height, width, 3), got {tuple(frames.shape)}."
            )
        settings = HintSettings(low_threshold, high_threshold, line_thickness, block_size)
        hints = compute_hints(frames[..., :3].float().cpu().numpy(), Preprocessor(preprocessor), settings)
        hints = torch.from_numpy(hints)
        positive, negative = apply_video_control(
            positive, negative, control_net, hints, strength, start_percent, end_percent, NODE, vae=vae
        )
        return io.NodeOutput(positive, negative, hints)
