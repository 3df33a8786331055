"""Names shared by the pack's nodes."""

from comfy_api.latest import io

CATEGORY = "Tune-A-Video"
TUNED_WEIGHTS = io.Custom("TAV_WEIGHTS")
SAVE_PRECISIONS = {"fp16": "float16", "fp32": "float32"}
