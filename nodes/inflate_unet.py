"""Inflate UNet: turn an image MODEL into a Tune-A-Video video MODEL (a patched clone)."""

from comfy_api.latest import io

from ..comfy_glue.unet_inflation import inflate_model
from ..tav_core.inflation_config import (
    AttentionMode,
    GroupNormMode,
    InflationConfig,
    PositionEncoding,
    TemporalConvMode,
)
from .common import CATEGORY, MOTION_MODULE

NODE = "Inflate UNet"


class InflateUNet(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="TAV_InflateUNet",
            display_name=NODE,
            category=CATEGORY,
            description=(
                "Turns a Stable Diffusion 1.x / 2.x / SDXL MODEL into a Tune-A-Video video model: the latent "
                "batch is read as the frames of a video, spatial self-attention looks across frames and a "
                "temporal attention layer follows every transformer block. The output is a patched clone; "
                "the loaded model itself is never changed."
            ),
            inputs=[
                io.Model.Input("model", tooltip="The image model to inflate (a checkpoint's MODEL, LoRAs allowed)."),
                io.Combo.Input(
                    "attention",
                    options=[mode.value for mode in AttentionMode],
                    default=AttentionMode.SPARSE_CAUSAL.value,
                    tooltip=(
                        "Which frames each frame's self-attention reads. sparse_causal: frame 0 and the previous "
                        "frame (Tune-A-Video). first_frame: frame 0 only (Text2Video-Zero; steadiest, least motion). "
                        "full: every frame of the video (most memory). per_frame: each frame only itself, the image "
                        "model's own attention (as AnimateDiff runs with a motion module)."
                    ),
                ),
                io.Boolean.Input(
                    "temporal_layers",
                    default=True,
                    tooltip=(
                        "Add a temporal self-attention layer after every transformer block. It starts as an exact "
                        "identity and is learned by One-Shot Tune; turn off to use only cross-frame attention."
                    ),
                ),
                io.Combo.Input(
                    "temporal_position_encoding",
                    options=[pe.value for pe in PositionEncoding],
                    default=PositionEncoding.NONE.value,
                    tooltip=(
                        "none: the temporal layers see no frame order (as the paper). sinusoidal: add an "
                        "AnimateDiff-style frame-index encoding before the temporal attention."
                    ),
                ),
                io.Combo.Input(
                    "groupnorm",
                    options=[mode.value for mode in GroupNormMode],
                    default=GroupNormMode.PER_FRAME.value,
                    tooltip=(
                        "per_frame: each frame is normalised alone, as the image model was trained (measured "
                        "best: pooled statistics made edited objects vanish from frames). per_video: ResNet "
                        "GroupNorm statistics pooled over all frames of a video, exactly as the reference's 3D "
                        "ResNet blocks (and as AnimateDiff v1 runs; v2, v3 and later use per_frame)."
                    ),
                ),
                MOTION_MODULE.Input(
                    "motion_module", optional=True,
                    tooltip=(
                        "An AnimateDiff motion module from TAV Load Motion Module: one module after every layer "
                        "of the down and up blocks (and the middle block for v2), as AnimateDiff places them. "
                        "For AnimateDiff's own result use attention per_frame, temporal_layers off and the "
                        "groupnorm of its version; keep Tune-A-Video's parts on for a hybrid."
                    ),
                ),
                io.Combo.Input(
                    "temporal_conv",
                    options=[mode.value for mode in TemporalConvMode],
                    default=TemporalConvMode.NONE.value,
                    optional=True,
                    tooltip=(
                        "none: the ResNet blocks stay per frame (as the paper). pseudo3d: Make-A-Video's pseudo-3D "
                        "convolution, a 1-D convolution over the frames of each video (kernel 3, zero padding at the "
                        "clip's ends) after every 3x3 convolution of the ResNet blocks. It starts as an exact "
                        "identity, is learned by One-Shot Tune and travels in the tuned-weights file; it adds many "
                        "parameters (133M for SD1.5: tuning 24 frames at 512x512 in bf16 with blocks checkpointing "
                        "needs about 9.1 GB instead of 7.1, each step 1.16x as long on a CPU) and cannot be saved in "
                        "the reference format."
                    ),
                ),
            ],
            outputs=[io.Model.Output(tooltip="The inflated video model: connect it to One-Shot Tune or a sampler.")],
        )

    @classmethod
    def execute(
        cls, model, attention: str, temporal_layers: bool, temporal_position_encoding: str, groupnorm: str,
        motion_module=None, temporal_conv: str = TemporalConvMode.NONE.value,
    ) -> io.NodeOutput:
        config = InflationConfig(
            attention=AttentionMode(attention),
            temporal_layers=temporal_layers,
            temporal_position_encoding=PositionEncoding(temporal_position_encoding),
            groupnorm=GroupNormMode(groupnorm),
            temporal_conv=TemporalConvMode(temporal_conv),
        )
        return io.NodeOutput(inflate_model(model, config, NODE, motion_module))
