"""How well an edited shapes-world video follows its prompt and its source's motion, judged per frame."""

import math
from dataclasses import dataclass

import numpy as np

from .judge import Judgement, judge


@dataclass(frozen=True)
class EditScore:
    text_alignment: float  # frames whose judged colour, shape and background all match the prompt
    motion_error: float  # mean centroid distance (px) to the source's, over frames where both show an object
    object_found: float  # frames in which the judge finds an object at all
    consistency: float  # consecutive frame pairs showing the same judged object (colour and shape)
    area_change: float  # mean |area change| / larger area, between consecutive frames that both show an object
    psnr: float  # dB against the source frames (meaningful for reconstructions)


def score_edit(frames: np.ndarray, source: np.ndarray, target: tuple[str, str, str]) -> EditScore:
    """frames, source: (F, H, W, 3) RGB uint8; target: the prompt's (colour, shape, background)."""
    edited = [judge(frame) for frame in frames]
    original = [judge(frame) for frame in source]
    distances = [_distance(a, b) for a, b in zip(edited, original, strict=True) if a.centroid and b.centroid]
    pairs = list(zip(edited, edited[1:], strict=False))
    same = [a.colour is not None and (a.colour, a.shape) == (b.colour, b.shape) for a, b in pairs]
    areas = [abs(b.area - a.area) / max(a.area, b.area) for a, b in pairs if a.centroid and b.centroid]
    mse = float(np.mean((frames.astype(np.float64) - source.astype(np.float64)) ** 2))
    return EditScore(
        text_alignment=float(np.mean([j.matches(*target) for j in edited])),
        motion_error=float(np.mean(distances)) if distances else math.nan,
        object_found=float(np.mean([j.centroid is not None for j in edited])),
        consistency=float(np.mean(same)) if same else math.nan,
        area_change=float(np.mean(areas)) if areas else math.nan,
        psnr=10 * math.log10(255.0**2 / mse) if mse > 0 else math.inf,
    )


def _distance(a: Judgement, b: Judgement) -> float:
    return math.hypot(a.centroid[0] - b.centroid[0], a.centroid[1] - b.centroid[1])
