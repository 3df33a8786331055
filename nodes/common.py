"""Names and input checks shared by the pack's nodes."""

import math
from collections.abc import Callable

from comfy_api.latest import io

from ..tav_core.errors import TAVInputError

CATEGORY = "Tune-A-Video"
TUNED_WEIGHTS = io.Custom("TAV_WEIGHTS")
MOTION_MODULE = io.Custom("MOTION_MODULE")
SAVE_PRECISIONS = {"fp16": "float16", "fp32": "float32"}


def check_numbers(node_class: type[io.ComfyNode], values: dict) -> None:
    """Each INT/FLOAT input in `values` must be a finite number inside its schema's bounds.

    ComfyUI's own range check lets NaN through, and it skips the inputs a node's validate_inputs names;
    None stands for a linked input, whose value is checked when the node runs.
    """
    schema = node_class.define_schema()
    for spec in schema.inputs:
        value = values.get(spec.id)
        if value is None or not isinstance(spec, (io.Int.Input, io.Float.Input)):
            continue
        if not math.isfinite(value):
            raise TAVInputError(schema.display_name, spec.id, f"{value} is not a number: give a finite value.")
        if spec.min is not None and value < spec.min or spec.max is not None and value > spec.max:
            raise TAVInputError(
                schema.display_name, spec.id, f"{value} is outside {spec.min} .. {spec.max}."
            )


def validation_result(check: Callable[[], object]) -> bool | str:
    """Run a node's input check for ComfyUI's validate_inputs: True, or the message that refuses the prompt."""
    try:
        check()
    except TAVInputError as error:
        return str(error)
    return True


def frame_window_inputs(what: str) -> list[io.Int.Input]:
    """`window` and `overlap`: the long-clip inputs of the nodes that run the UNet over a clip."""
    return [
        io.Int.Input(
            "window", default=0, min=0, max=4096, optional=True,
            tooltip=(
                f"0: {what} runs the UNet on all frames at once. Above 0: on overlapping windows of this many "
                "frames, blended where they overlap, so memory follows the window, not the clip; every window "
                "also reads the clip's frame 0, so appearance holds across windows. Works on every ComfyUI "
                "version (no context-window node needed)."
            ),
        ),
        io.Int.Input(
            "overlap", default=4, min=0, max=4095, optional=True,
            tooltip="With a window: frames shared by neighbouring windows, cross-faded (below the window).",
        ),
    ]

