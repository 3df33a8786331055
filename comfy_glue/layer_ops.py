"""ComfyUI layer classes for the modules the pack adds beside the UNet (temporal layers, motion modules)."""

import comfy.ops
from torch import nn


class TemporalLayerOps(comfy.ops.disable_weight_init):
    """ComfyUI's layers (weight casting, for lowvram and for training in another dtype) whose Linear weights exist
    from construction and take loaded values by copy, in their own dtype and device, as torch's do.

    With dynamic VRAM (ComfyUI 0.33 on GPUs, comfy-aimdo) the stock Linear is built without a weight and adopts a
    loaded tensor as it is; the temporal layers are built and initialised, or filled from other layers' values.
    """

    class Linear(comfy.ops.disable_weight_init.Linear):
        _load_from_state_dict = nn.Linear._load_from_state_dict


class CastingLayerOps(TemporalLayerOps):
    """As TemporalLayerOps, with weights cast to the input's dtype at every call: a motion module stays in its file's
    dtype (one copy in memory) and runs in whatever dtype the UNet it is injected into computes in."""

    class Linear(TemporalLayerOps.Linear):
        comfy_cast_weights = True

    class LayerNorm(TemporalLayerOps.LayerNorm):
        comfy_cast_weights = True

    class GroupNorm(TemporalLayerOps.GroupNorm):
        comfy_cast_weights = True
