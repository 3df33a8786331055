"""Shapes world: 64x64 frames with one coloured shape on a plain background, judged exactly by OpenCV.

It is the instrument the demo model is trained on and measured with: every generated frame can be
checked for background, colour, shape and position, so an edit's text alignment and motion can be
measured in numbers.
"""

import math
from dataclasses import dataclass

import numpy as np

from ..tav_core.opencv import import_cv2

FRAME_SIZE = 64
BACKGROUNDS = {"white": (250, 250, 250), "black": (10, 10, 10), "gray": (128, 128, 128), "blue": (35, 75, 215)}
COLOURS = {
    "red": (225, 30, 35), "green": (35, 175, 60), "blue": (35, 75, 215), "yellow": (245, 215, 35),
    "purple": (145, 45, 175), "orange": (250, 135, 20),
}
SHAPES = ("circle", "square", "triangle")
SIZE_RANGE = (8, 14)  # circumradius-like half size in pixels
BORDER = 2  # background pixels kept between every object and the frame's edge
SQUARE_HALF_SIDE = 1.25 / math.sqrt(2)  # x half size: a square of similar area to the circle
TRIANGLE_VERTICES = ((0.0, -1.3), (-1.15, 0.7), (1.15, 0.7))  # x half size, from the centre; pointing up
REACH = {  # farthest any point of the shape lies from its centre along x or y, in half sizes
    "circle": 1.0,
    "square": SQUARE_HALF_SIDE,
    "triangle": max(abs(coordinate) for vertex in TRIANGLE_VERTICES for coordinate in vertex),  # the apex: 1.3
}
PATHS = ("linear", "diagonal", "arc", "bounce")


@dataclass(frozen=True)
class Scene:
    background: str
    colour: str
    shape: str
    cx: float
    cy: float
    size: float

    @property
    def caption(self) -> str:
        return caption(self.colour, self.shape, self.background)


def caption(colour: str, shape: str, background: str) -> str:
    return f"a {colour} {shape} on a {background} background"


def parse_caption(text: str) -> tuple[str, str, str]:
    """(colour, shape, background) of a caption of this world; ValueError for anything else."""
    words = text.strip().lower().split()
    if len(words) != 7 or words[0] != "a" or words[3:5] != ["on", "a"] or words[6] != "background":
        raise ValueError(f"not a shapes-world caption: {text!r} (want 'a red circle on a white background')")
    colour, shape, background = words[1], words[2], words[5]
    if colour not in COLOURS or shape not in SHAPES or background not in BACKGROUNDS:
        raise ValueError(f"unknown colour, shape or background in the caption {text!r}")
    return colour, shape, background


def all_captions() -> list[str]:
    return [
        caption(colour, shape, background)
        for background in BACKGROUNDS for colour in COLOURS for shape in SHAPES if colour != background
    ]


def centre_range(shape: str, half: float, size: int = FRAME_SIZE) -> tuple[float, float]:
    """Lowest and highest x (or y) of a shape's centre that keep the whole shape and BORDER inside the frame
    (pixel centres at 0 .. size - 1)."""
    margin = REACH[shape] * half + BORDER
    return margin, size - 1 - margin


def random_scene(rng: np.random.Generator, size: int = FRAME_SIZE) -> Scene:
    background = str(rng.choice(list(BACKGROUNDS)))
    colour = str(rng.choice([c for c in COLOURS if c != background]))
    half = float(rng.uniform(*SIZE_RANGE))
    shape = str(rng.choice(SHAPES))
    low, high = centre_range(shape, half, size)
    return Scene(background, colour, shape, float(rng.uniform(low, high)), float(rng.uniform(low, high)), half)


def render(scene: Scene, size: int = FRAME_SIZE) -> np.ndarray:
    """RGB uint8 (size, size, 3). Shapes are axis-aligned: squares upright, triangles pointing up."""
    cv2 = import_cv2()
    image = np.empty((size, size, 3), np.uint8)
    image[:] = BACKGROUNDS[scene.background]
    colour = COLOURS[scene.colour]
    shift = 4  # sub-pixel positions: coordinates in 1/16 pixel
    scale = 1 << shift
    cx, cy, half = scene.cx * scale, scene.cy * scale, scene.size * scale
    if scene.shape == "circle":
        cv2.circle(image, (round(cx), round(cy)), round(half), colour, -1, cv2.LINE_8, shift)
    elif scene.shape == "square":
        side = half * SQUARE_HALF_SIDE
        cv2.rectangle(image, (round(cx - side), round(cy - side)), (round(cx + side), round(cy + side)), colour, -1,
                      cv2.LINE_8, shift)
    else:
        points = [(cx + x * half, cy + y * half) for x, y in TRIANGLE_VERTICES]
        cv2.fillPoly(image, [np.round(np.array(points)).astype(np.int32)], colour, cv2.LINE_8, shift)
    return image


def object_mask(images: np.ndarray) -> np.ndarray:
    """(N, H, W) True where the object is, for images (N, H, W, 3): pixels unlike the top-left one, which is
    background because objects keep a margin from the border."""
    return (images != images[:, :1, :1]).any(axis=-1)


def object_coverage(mask: np.ndarray, cell: int) -> np.ndarray:
    """(N, H/cell, W/cell) fraction of each cell x cell block that an object mask (N, H, W) covers."""
    count, height, width = mask.shape
    return mask.astype(np.float32).reshape(count, height // cell, cell, width // cell, cell).mean(axis=(2, 4))


@dataclass(frozen=True)
class Clip:
    frames: np.ndarray  # (F, size, size, 3) uint8
    caption: str
    centroids: np.ndarray  # (F, 2) the path's (x, y) per frame
    scenes: tuple[Scene, ...]


def path_points(path: str, frames: int, rng: np.random.Generator, low: float, high: float) -> np.ndarray:
    """(frames, 2) object centres along a motion path whose x and y stay within [low, high]."""
    t = np.linspace(0.0, 1.0, frames)
    if path == "linear":
        y = rng.uniform(low, high)
        x0, x1 = (low, high) if rng.random() < 0.5 else (high, low)
        return np.stack([x0 + (x1 - x0) * t, np.full(frames, y)], axis=1)
    if path == "diagonal":
        start, end = np.array([low, low]), np.array([high, high])
        if rng.random() < 0.5:
            start, end = np.array([low, high]), np.array([high, low])
        return start + (end - start) * t[:, None]
    if path == "arc":
        centre, radius = (low + high) / 2, (high - low) / 2
        angles = rng.uniform(0, math.pi) + t * math.pi
        return np.stack([centre + radius * np.cos(angles), centre + radius * 0.6 * np.sin(angles)], axis=1)
    if path == "bounce":  # across and back, reflecting off the wall
        x = low + (high - low) * (1 - np.abs(1 - 2 * t))
        y = rng.uniform(low, high) + 0 * t
        return np.stack([x, y], axis=1)
    raise ValueError(f"unknown path {path!r}")


def random_clip(seed: int, frames: int = 8, size: int = FRAME_SIZE, path: str | None = None) -> Clip:
    """A source video: one object moving along a path, with its caption (reproducible from the seed)."""
    rng = np.random.default_rng(seed)
    first = random_scene(rng, size)
    path = path or str(rng.choice(PATHS))
    points = path_points(path, frames, rng, *centre_range(first.shape, first.size, size))
    scenes = tuple(Scene(first.background, first.colour, first.shape, float(x), float(y), first.size)
                   for x, y in points)
    return Clip(np.stack([render(s, size) for s in scenes]), first.caption, points, scenes)


def clip_speeds(frames: int, clips: int = 200, seed: int = 0) -> np.ndarray:
    """The mean centroid step (px/frame) of each of `clips` seeded world clips of `frames` frames."""
    return np.array([np.linalg.norm(np.diff(random_clip(seed + n, frames).centroids, axis=0), axis=1).mean()
                     for n in range(clips)])
