"""Per-frame control hints computed with OpenCV: no downloaded annotator weights.

Frames are RGB float arrays in [0, 1], shape (F, H, W, 3); every preprocessor returns the same
shape and range (single-channel maps are repeated to RGB, as ControlNets expect).
"""

from dataclasses import dataclass
from enum import Enum

import numpy as np

from .opencv import import_cv2


class Preprocessor(str, Enum):
    NONE = "none"  # the frames already are hints (e.g. a depth or pose video)
    CANNY = "canny"  # canny ControlNets / T2I-Adapters
    SOFT_EDGE = "soft_edge"  # softedge / HED-style ControlNets
    SCRIBBLE = "scribble"  # scribble ControlNets / sketch T2I-Adapters
    LINEART = "lineart"  # lineart ControlNets
    COLOR = "color"  # the T2I-Adapter colour palette model
    TILE = "tile"  # tile / blur ControlNets


@dataclass(frozen=True)
class HintSettings:
    low_threshold: int = 100
    high_threshold: int = 200
    line_thickness: int = 3
    block_size: int = 64


def to_uint8(frames: np.ndarray) -> np.ndarray:
    return (np.clip(frames, 0.0, 1.0) * 255.0).round().astype(np.uint8)


def grey(frame_u8: np.ndarray) -> np.ndarray:
    cv2 = import_cv2()
    return cv2.cvtColor(frame_u8, cv2.COLOR_RGB2GRAY)


def as_rgb(maps: np.ndarray) -> np.ndarray:
    """(F, H, W) uint8 maps -> (F, H, W, 3) float in [0, 1]."""
    return np.repeat(maps[..., None], 3, axis=-1).astype(np.float32) / 255.0


def canny(frames_u8: np.ndarray, settings: HintSettings) -> np.ndarray:
    cv2 = import_cv2()
    return np.stack([cv2.Canny(grey(f), settings.low_threshold, settings.high_threshold) for f in frames_u8])


def soft_edge(frames_u8: np.ndarray) -> np.ndarray:
    """Sobel gradient magnitude of each frame, normalised to its own maximum."""
    cv2 = import_cv2()
    maps = []
    for frame in frames_u8:
        g = grey(frame).astype(np.float32) / 255.0
        magnitude = np.hypot(cv2.Sobel(g, cv2.CV_32F, 1, 0, ksize=3), cv2.Sobel(g, cv2.CV_32F, 0, 1, ksize=3))
        peak = float(magnitude.max())
        maps.append(np.zeros_like(magnitude) if peak == 0 else magnitude / peak)
    return (np.stack(maps) * 255.0).round().astype(np.uint8)


def scribble(frames_u8: np.ndarray, settings: HintSettings) -> np.ndarray:
    """Canny edges thickened to `line_thickness` pixels and binarised, like a hand scribble."""
    cv2 = import_cv2()
    size = max(1, settings.line_thickness)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))
    return np.stack([(cv2.dilate(edges, kernel) > 0).astype(np.uint8) * 255 for edges in canny(frames_u8, settings)])


def lineart(frames_u8: np.ndarray, settings: HintSettings) -> np.ndarray:
    """Adaptive threshold of the grey frame: white lines on black, as lineart ControlNets expect."""
    cv2 = import_cv2()
    block = max(3, settings.block_size // 8 * 2 + 1)  # an odd neighbourhood, proportional to block_size
    return np.stack([
        cv2.adaptiveThreshold(grey(f), 255, cv2.ADAPTIVE_THRESH_GAUSSIAN_C, cv2.THRESH_BINARY_INV, block, 8)
        for f in frames_u8
    ])


def block_resample(frames_u8: np.ndarray, block: int, up_interpolation: int) -> np.ndarray:
    """Shrink each frame by `block` (area average), then enlarge back with `up_interpolation`."""
    cv2 = import_cv2()
    out = []
    for frame in frames_u8:
        h, w = frame.shape[:2]
        small = cv2.resize(frame, (max(1, w // block), max(1, h // block)), interpolation=cv2.INTER_AREA)
        out.append(cv2.resize(small, (w, h), interpolation=up_interpolation))
    return np.stack(out)


def compute_hints(frames: np.ndarray, preprocessor: Preprocessor, settings: HintSettings) -> np.ndarray:
    """(F, H, W, 3) float frames in [0, 1] -> (F, H, W, 3) float hints in [0, 1]."""
    preprocessor = Preprocessor(preprocessor)
    if preprocessor == Preprocessor.NONE:
        return np.clip(frames, 0.0, 1.0).astype(np.float32)
    cv2 = import_cv2()
    frames_u8 = to_uint8(frames)
    if preprocessor == Preprocessor.CANNY:
        return as_rgb(canny(frames_u8, settings))
    if preprocessor == Preprocessor.SOFT_EDGE:
        return as_rgb(soft_edge(frames_u8))
    if preprocessor == Preprocessor.SCRIBBLE:
        return as_rgb(scribble(frames_u8, settings))
    if preprocessor == Preprocessor.LINEART:
        return as_rgb(lineart(frames_u8, settings))
    if preprocessor == Preprocessor.COLOR:  # T2I-Adapter colour: block palette, hard cell edges
        return block_resample(frames_u8, max(1, settings.block_size), cv2.INTER_NEAREST).astype(np.float32) / 255.0
    # TILE: a low-resolution copy, smoothly enlarged
    return block_resample(frames_u8, max(1, settings.block_size // 8), cv2.INTER_CUBIC).astype(np.float32) / 255.0
