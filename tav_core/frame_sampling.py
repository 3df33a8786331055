"""Choosing and sizing the frames of a clip, as the reference's dataset does (start index, frame rate)."""

from enum import Enum

import numpy as np

from .opencv import import_cv2


class ResizeMode(str, Enum):
    CROP = "crop"  # fill the target, cut the overflow (centred)
    PAD = "pad"  # fit inside the target, black borders
    STRETCH = "stretch"  # ignore the aspect ratio


def frames(count: int) -> str:
    return f"{count} frame" + ("" if count == 1 else "s")


def frame_indices(total: int, count: int, start: int, stride: int) -> list[int]:
    """`count` frames from `start`, every `stride`-th (sample_start_idx / sample_frame_rate)."""
    if count < 1 or stride < 1 or start < 0:
        raise ValueError(f"count {count} and stride {stride} must be at least 1, start {start} at least 0.")
    last = start + (count - 1) * stride
    if last >= total:
        raise ValueError(
            f"the video has {frames(total)}, but {frames(count)} from frame {start} every {stride} need "
            f"{frames(last + 1)}."
        )
    return list(range(start, last + 1, stride))


def fit_frame(frame: np.ndarray, width: int, height: int, mode: ResizeMode) -> np.ndarray:
    """(H, W, C) float frame in [0, 1] -> (height, width, C), resized with OpenCV."""
    cv2 = import_cv2()
    h, w = frame.shape[:2]
    mode = ResizeMode(mode)
    if mode == ResizeMode.STRETCH:
        scale_w, scale_h = width / w, height / h
    else:
        scale = max(width / w, height / h) if mode == ResizeMode.CROP else min(width / w, height / h)
        scale_w = scale_h = scale
    new_w, new_h = max(1, round(w * scale_w)), max(1, round(h * scale_h))
    shrinking = new_w * new_h < w * h
    resized = cv2.resize(frame, (new_w, new_h), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC)
    resized = np.clip(resized.reshape(new_h, new_w, -1), 0.0, 1.0)
    if mode == ResizeMode.STRETCH:
        return resized
    if mode == ResizeMode.CROP:
        top, left = (new_h - height) // 2, (new_w - width) // 2
        return resized[top: top + height, left: left + width]
    out = np.zeros((height, width, frame.shape[2]), dtype=frame.dtype)
    top, left = (height - new_h) // 2, (width - new_w) // 2
    out[top: top + new_h, left: left + new_w] = resized
    return out


def sample_frames(
    frames: np.ndarray, count: int, start: int, stride: int, width: int, height: int, mode: ResizeMode
) -> np.ndarray:
    """(N, H, W, C) clip -> (count, height, width, C) training/editing frames."""
    picked = frame_indices(frames.shape[0], count, start, stride)
    return np.stack([fit_frame(frames[i], width, height, mode) for i in picked]).astype(np.float32)
