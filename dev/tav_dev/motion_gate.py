"""The demo motion module's quality gate: text-to-video from fresh noise on seeded prompts, every frame judged.

The video model is built and sampled by the pack's own nodes (Inflate UNet as AnimateDiff runs a module:
per-frame attention, no temporal layers, per-frame GroupNorm; TAV Sample from an empty latent), decoded by the
demo VAE, and scored by shapes_demo.metrics.score_motion. Speed is judged against the world's own clips of the
same length: a module that learned to stand still fails.
"""

import json
from dataclasses import asdict, dataclass

import numpy as np
import torch

from .demo_gate import GATE_CFG, GATE_STEPS
from .shapes_bench import mean

RIGHT_OBJECT, CONSISTENCY, SPEED_SHARE = 0.95, 0.9, 0.5  # the gate: issue 23's figures
GATE_PROMPTS, GATE_FRAMES, GATE_SEED = 50, 16, 2  # the training script's gate, which the test suite re-checks


@dataclass(frozen=True)
class MotionGate:
    prompts: int
    frames: int
    object_found: float
    right_object: float
    consistency: float
    speed: float  # px/frame, mean over the videos
    acceleration: float  # px/frame^2
    world_speed: float  # median of the world's clips of `frames` frames

    def passed(self) -> bool:
        return (self.right_object >= RIGHT_OBJECT and self.consistency >= CONSISTENCY
                and self.speed >= SPEED_SHARE * self.world_speed)

    def as_dict(self) -> dict:
        return {key: round(value, 4) if isinstance(value, float) else value for key, value in asdict(self).items()}

    def describe(self) -> str:
        return json.dumps(self.as_dict())


def video_model(model, motion_module):
    """The image MODEL inflated as AnimateDiff runs it with a motion module, through Inflate UNet."""
    from comfyui_tune_a_video.nodes.inflate_unet import InflateUNet

    return InflateUNet.execute(model, attention="per_frame", temporal_layers=False,
                               temporal_position_encoding="none", groupnorm="per_frame",
                               motion_module=motion_module).result[0]


def sample_videos(model, clip, vae, captions: list[str], frames: int, seed: int) -> list[np.ndarray]:
    """One text-to-video sample per caption from fresh noise (seed + index), as (F, 64, 64, 3) uint8 frames."""
    from comfyui_tune_a_video.nodes.tav_sample import TAVSample

    import nodes as comfy_nodes

    (negative,) = comfy_nodes.CLIPTextEncode().encode(clip, "")
    videos = []
    for number, text in enumerate(captions):
        (positive,) = comfy_nodes.CLIPTextEncode().encode(clip, text)
        latent = {"samples": torch.zeros(frames, 4, 8, 8)}
        (samples,) = TAVSample.execute(model, positive, negative, latent, steps=GATE_STEPS, cfg=GATE_CFG, eta=0.0,
                                       seed=seed + number).result
        (images,) = comfy_nodes.VAEDecode().decode(vae, samples)
        videos.append((images.numpy() * 255).round().astype(np.uint8))
    return videos


def gate_videos(
    model, clip, vae, motion_module, prompts: int, seed: int, frames: int
) -> tuple[list[str], list[np.ndarray]]:
    """The gate's seeded captions and their text-to-video samples from fresh noise."""
    from comfyui_tune_a_video.shapes_demo.world import random_scene

    rng = np.random.default_rng(seed)
    captions = [random_scene(rng).caption for _ in range(prompts)]
    with torch.inference_mode():  # as ComfyUI runs nodes
        return captions, sample_videos(video_model(model, motion_module), clip, vae, captions, frames, seed)


def motion_gate(model, clip, vae, motion_module, prompts: int, seed: int, frames: int) -> MotionGate:
    from comfyui_tune_a_video.shapes_demo.metrics import score_motion
    from comfyui_tune_a_video.shapes_demo.world import clip_speeds, parse_caption

    captions, videos = gate_videos(model, clip, vae, motion_module, prompts, seed, frames)
    scores = [score_motion(video, parse_caption(text)) for video, text in zip(videos, captions, strict=True)]

    def average(name: str) -> float:
        return mean([getattr(score, name) for score in scores])

    return MotionGate(prompts, frames, average("object_found"), average("right_object"), average("consistency"),
                      average("speed"), average("acceleration"), float(np.median(clip_speeds(frames))))
