"""TAV Save Tuned Weights and TAV Load Tuned Weights: one tune, many edits."""

import torch
from comfy_api.latest import io

from ..comfy_glue.model_folders import load_tuned_weights, save_tuned_weights, tuned_weights_files
from ..comfy_glue.tuned_weights import load_onto
from ..tav_core.errors import TAVInputError
from .common import CATEGORY, SAVE_PRECISIONS, TUNED_WEIGHTS

SAVE_NODE = "TAV Save Tuned Weights"
LOAD_NODE = "TAV Load Tuned Weights"


class SaveTunedWeights(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="TAV_SaveTunedWeights",
            display_name=SAVE_NODE,
            category=CATEGORY,
            description=(
                "Saves One-Shot Tune's tuned parameters (to_q deltas and temporal layers, with a fingerprint of "
                "the base checkpoint) to models/tuneavideo/ as a small safetensors file."
            ),
            is_output_node=True,
            inputs=[
                TUNED_WEIGHTS.Input("tuned_weights", tooltip="The tuned_weights output of One-Shot Tune."),
                io.String.Input(
                    "save_name", default="tuneavideo/clip",
                    tooltip="File name inside models/tuneavideo/ ('.safetensors' is added); '/' makes sub-folders.",
                ),
                io.Combo.Input(
                    "precision", options=list(SAVE_PRECISIONS), default="fp16",
                    tooltip="fp16 halves the file with no visible difference; fp32 keeps the tuned values exactly.",
                ),
            ],
            outputs=[],
        )

    @classmethod
    def execute(cls, tuned_weights, save_name: str, precision: str) -> io.NodeOutput:
        try:
            save_tuned_weights(tuned_weights, save_name, getattr(torch, SAVE_PRECISIONS[precision]))
        except ValueError as error:
            raise TAVInputError(SAVE_NODE, "save_name", str(error)) from error
        return io.NodeOutput()


class LoadTunedWeights(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="TAV_LoadTunedWeights",
            display_name=LOAD_NODE,
            category=CATEGORY,
            description=(
                "Applies saved One-Shot Tune weights to the checkpoint they were tuned on, giving the tuned video "
                "model again without re-tuning. An un-inflated MODEL is inflated with the recorded settings."
            ),
            inputs=[
                io.Model.Input("model", tooltip="The same base checkpoint's MODEL (inflated or not)."),
                io.Combo.Input(
                    "weights_name", options=tuned_weights_files(),
                    tooltip="A file in models/tuneavideo/ written by One-Shot Tune or TAV Save Tuned Weights.",
                ),
                io.Boolean.Input(
                    "allow_mismatch", default=False,
                    tooltip="Apply the weights even if the base UNet's weights differ from the one tuned on.",
                ),
            ],
            outputs=[
                io.Model.Output(display_name="model", tooltip="The tuned video model."),
                TUNED_WEIGHTS.Output(display_name="tuned_weights", tooltip="The loaded tuned parameters."),
            ],
        )

    @classmethod
    def execute(cls, model, weights_name: str, allow_mismatch: bool) -> io.NodeOutput:
        try:
            weights = load_tuned_weights(weights_name)
        except (ValueError, FileNotFoundError) as error:
            raise TAVInputError(LOAD_NODE, "weights_name", str(error)) from error
        return io.NodeOutput(load_onto(model, weights, allow_mismatch, LOAD_NODE), weights)
