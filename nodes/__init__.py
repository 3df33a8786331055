"""The pack's ComfyUI nodes (V3 schema); each module holds one job and stays thin."""

from .inflate_unet import InflateUNet
from .one_shot_tune import OneShotTune
from .tuned_weights_io import LoadTunedWeights, SaveTunedWeights

NODE_CLASSES = [InflateUNet, OneShotTune, SaveTunedWeights, LoadTunedWeights]
