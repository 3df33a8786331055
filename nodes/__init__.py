"""The pack's ComfyUI nodes (V3 schema); each module holds one job and stays thin."""

from .control_condition import ControlCondition
from .ddim_invert_video import DDIMInvertVideo
from .inflate_unet import InflateUNet
from .interpolate_frames import InterpolateFrames
from .inversion_sampler import DDIMInversionSampler
from .load_demo_model import LoadDemoModel
from .load_motion_module import LoadMotionModule
from .load_reference_unet import LoadReferenceUNet
from .one_shot_tune import OneShotTune
from .sample_frames import SampleFrames
from .tav_sample import TAVSample
from .tuned_weights_io import LoadTunedWeights, SaveTunedWeights

NODE_CLASSES = [
    InflateUNet, OneShotTune, SaveTunedWeights, LoadTunedWeights, DDIMInvertVideo, TAVSample, DDIMInversionSampler,
    ControlCondition, SampleFrames, LoadDemoModel, LoadMotionModule, LoadReferenceUNet, InterpolateFrames,
]
