"""Judge a shapes-world frame with OpenCV: background, object colour, shape, centroid and area."""

from dataclasses import dataclass

import numpy as np

from ..tav_core.opencv import import_cv2
from .world import BACKGROUNDS, COLOURS

OBJECT_DISTANCE = 60.0  # RGB distance from the background beyond which a pixel belongs to the object
MIN_AREA = 12
SQUARE_FILL, CIRCLE_FILL = 0.88, 0.64  # the box fill above which an object is a square, else a circle, else a triangle


@dataclass(frozen=True)
class Judgement:
    background: str
    colour: str | None
    shape: str | None
    centroid: tuple[float, float] | None
    area: float
    box_fill: float | None = None  # the share of its axis-aligned bounding box the object fills: what tells its shape

    def matches(self, colour: str, shape: str, background: str) -> bool:
        return (self.colour, self.shape, self.background) == (colour, shape, background)


def nearest(rgb: np.ndarray, palette: dict[str, tuple[int, int, int]]) -> str:
    names = list(palette)
    distances = [float(np.linalg.norm(rgb - np.array(palette[name], dtype=np.float64))) for name in names]
    return names[int(np.argmin(distances))]


def unlike_background(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """pixels: float RGB (H, W, 3). The background's RGB (the median of a 2-pixel border) and the mask of the
    pixels farther from it than OBJECT_DISTANCE."""
    border = np.concatenate([pixels[:2].reshape(-1, 3), pixels[-2:].reshape(-1, 3), pixels[:, :2].reshape(-1, 3),
                             pixels[:, -2:].reshape(-1, 3)])
    background_rgb = np.median(border, axis=0)
    return background_rgb, np.linalg.norm(pixels - background_rgb, axis=-1) > OBJECT_DISTANCE


def box_fill(mask: np.ndarray) -> float:
    ys, xs = np.nonzero(mask)
    return len(xs) / ((xs.max() - xs.min() + 1) * (ys.max() - ys.min() + 1))


def classify_shape(fill: float) -> str:
    """Axis-aligned shapes by how much of their bounding box they fill: square ~1, circle ~0.79, triangle ~0.5."""
    if fill > SQUARE_FILL:
        return "square"
    return "circle" if fill > CIRCLE_FILL else "triangle"


def judge(frame: np.ndarray) -> Judgement:
    """frame: RGB uint8 (H, W, 3)."""
    cv2 = import_cv2()
    pixels = frame.astype(np.float64)
    background_rgb, far = unlike_background(pixels)
    background = nearest(background_rgb, BACKGROUNDS)
    count, labels, stats, centroids = cv2.connectedComponentsWithStats(far.astype(np.uint8), connectivity=8)
    if count < 2:
        return Judgement(background, None, None, None, 0.0)
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    area = float(stats[largest, cv2.CC_STAT_AREA])
    if area < MIN_AREA:
        return Judgement(background, None, None, None, area)
    mask = labels == largest
    colour = nearest(np.median(pixels[mask], axis=0), COLOURS)
    cx, cy = centroids[largest]
    fill = box_fill(mask)
    return Judgement(background, colour, classify_shape(fill), (float(cx), float(cy)), area, fill)
