"""TAV Sample Frames: pick and size the frames of a loaded video for tuning and editing."""

import torch
from comfy_api.latest import io

from ..tav_core.errors import TAVInputError
from ..tav_core.frame_sampling import ResizeMode, sample_frames
from .common import CATEGORY, check_numbers, validation_result

NODE = "TAV Sample Frames"


class SampleFrames(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="TAV_SampleFrames",
            display_name=NODE,
            category=CATEGORY,
            description=(
                "Takes `count` frames from a video's frames (e.g. Load Video -> Get Video Components), starting at "
                "`start` and keeping every `stride`-th, and resizes them to width x height, as the paper's data "
                "loader does (24 frames from frame 0 every 2 frames, 512x512)."
            ),
            inputs=[
                io.Image.Input("images", tooltip="All frames of the video, in order."),
                io.Int.Input("count", default=24, min=1, max=1024, tooltip="How many frames to keep (the paper: 24)."),
                io.Int.Input("start", default=0, min=0, max=1_000_000, tooltip="Index of the first frame to keep."),
                io.Int.Input(
                    "stride", default=2, min=1, max=1000,
                    tooltip="Keep every stride-th frame (2 halves a 30 fps clip to 15 fps, as the paper).",
                ),
                io.Int.Input("width", default=512, min=8, max=4096, step=8, tooltip="Output width, a multiple of 8."),
                io.Int.Input(
                    "height", default=512, min=8, max=4096, step=8, tooltip="Output height, a multiple of 8."
                ),
                io.Combo.Input(
                    "resize", options=[m.value for m in ResizeMode], default=ResizeMode.CROP.value,
                    tooltip="crop: fill the frame and cut the overflow. pad: fit inside with black borders. "
                    "stretch: ignore the aspect ratio.",
                ),
            ],
            outputs=[io.Image.Output(tooltip="The chosen frames, ready for VAEEncode.")],
        )

    @classmethod
    def check_inputs(cls, **numbers: int | None) -> None:
        check_numbers(cls, numbers)
        for name in ("width", "height"):
            value = numbers.get(name)
            if value is not None and value % 8:
                raise TAVInputError(NODE, name, f"{value} is not a multiple of 8, which the VAE needs.")

    @classmethod
    def validate_inputs(
        cls, count: int | None = None, start: int | None = None, stride: int | None = None,
        width: int | None = None, height: int | None = None,
    ) -> bool | str:
        return validation_result(
            lambda: cls.check_inputs(count=count, start=start, stride=stride, width=width, height=height)
        )

    @classmethod
    def execute(
        cls, images, count: int, start: int, stride: int, width: int, height: int, resize: str
    ) -> io.NodeOutput:
        cls.check_inputs(count=count, start=start, stride=stride, width=width, height=height)
        try:
            clip = images.float().cpu().numpy()
            frames = sample_frames(clip, count, start, stride, width, height, ResizeMode(resize))
        except ValueError as error:
            raise TAVInputError(NODE, "count", str(error), "Lower count or stride, or start earlier.") from error
        return io.NodeOutput(torch.from_numpy(frames))
