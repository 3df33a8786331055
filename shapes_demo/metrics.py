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
    end_drift: float  # last-quarter frames whose judged object (colour, shape, background) differs from frame 0's


def score_edit(frames: np.ndarray, source: np.ndarray, target: tuple[str, str, str]) -> EditScore:
    """frames, source: (F, H, W, 3) RGB uint8; target: the prompt's (colour, shape, background)."""
    edited = [judge(frame) for frame in frames]
    original = [judge(frame) for frame in source]
    distances = [_distance(a, b) for a, b in zip(edited, original, strict=True) if a.centroid and b.centroid]
    pairs = list(zip(edited, edited[1:], strict=False))
    areas = [abs(b.area - a.area) / max(a.area, b.area) for a, b in pairs if a.centroid and b.centroid]
    mse = float(np.mean((frames.astype(np.float64) - source.astype(np.float64)) ** 2))
    return EditScore(
        text_alignment=float(np.mean([j.matches(*target) for j in edited])),
        motion_error=float(np.mean(distances)) if distances else math.nan,
        object_found=float(np.mean([j.centroid is not None for j in edited])),
        consistency=consistency(edited),
        area_change=float(np.mean(areas)) if areas else math.nan,
        psnr=10 * math.log10(255.0**2 / mse) if mse > 0 else math.inf,
        end_drift=end_drift(edited),
    )


def end_drift(judged: list[Judgement]) -> float:
    """How far a long video's look wanders from its start: the share of its last quarter of frames whose judged
    object (colour and shape) or background is not frame 0's; nan where frame 0 shows no object."""
    first = judged[0]
    if first.colour is None:
        return math.nan
    last = judged[len(judged) - max(1, len(judged) // 4):]
    return float(np.mean([(j.colour, j.shape, j.background) != (first.colour, first.shape, first.background)
                          for j in last]))


def consistency(judged: list[Judgement]) -> float:
    """Consecutive frame pairs showing the same judged object (colour and shape); nan for a single frame."""
    same = [a.colour is not None and (a.colour, a.shape) == (b.colour, b.shape)
            for a, b in zip(judged, judged[1:], strict=False)]
    return float(np.mean(same)) if same else math.nan


def _distance(a: Judgement, b: Judgement) -> float:
    return math.hypot(a.centroid[0] - b.centroid[0], a.centroid[1] - b.centroid[1])


@dataclass(frozen=True)
class MotionScore:
    """How a generated shapes-world video moves, judged on every frame."""

    object_found: float  # frames in which the judge finds an object
    right_object: float  # frames whose judged colour, shape and background all match the prompt
    consistency: float  # consecutive frame pairs showing the same judged object (colour and shape)
    speed: float  # mean centroid step (px/frame) between consecutive frames that both show an object
    acceleration: float  # mean |c[i+1] - 2 c[i] + c[i-1]| (px/frame^2) over runs of three frames with an object
    trajectory_error: float  # mean distance of the mean-centred centroid paths to a reference path (px), or nan


def score_motion(
    frames: np.ndarray, target: tuple[str, str, str], reference_path: np.ndarray | None = None
) -> MotionScore:
    """frames: (F, H, W, 3) RGB uint8; target: the prompt's (colour, shape, background); reference_path: (F, 2)
    centroids to compare the motion with. Both paths are centred on their means over the frames that show an
    object, so a motion drawn elsewhere in the frame is not an error: only its shape and timing are."""
    judged = [judge(frame) for frame in frames]
    points = [np.array(j.centroid) if j.centroid is not None else None for j in judged]
    steps = [float(np.linalg.norm(b - a)) for a, b in zip(points, points[1:], strict=False)
             if a is not None and b is not None]
    turns = [float(np.linalg.norm(c - 2 * b + a)) for a, b, c in zip(points, points[1:], points[2:], strict=False)
             if a is not None and b is not None and c is not None]
    return MotionScore(
        object_found=float(np.mean([p is not None for p in points])),
        right_object=float(np.mean([j.matches(*target) for j in judged])),
        consistency=consistency(judged),
        speed=float(np.mean(steps)) if steps else math.nan,
        acceleration=float(np.mean(turns)) if turns else math.nan,
        trajectory_error=trajectory_error(points, reference_path) if reference_path is not None else math.nan,
    )


def trajectory_error(points: list[np.ndarray | None], reference_path: np.ndarray) -> float:
    """Mean distance between two centroid paths once each is centred on its mean, over the frames with a point."""
    found = [i for i, point in enumerate(points) if point is not None]
    if not found:
        return math.nan
    path = np.stack([points[i] for i in found])
    reference = np.asarray(reference_path, dtype=np.float64)[found]
    centred = (path - path.mean(axis=0)) - (reference - reference.mean(axis=0))
    return float(np.linalg.norm(centred, axis=1).mean())
