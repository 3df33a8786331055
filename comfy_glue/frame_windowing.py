"""Long clips through the UNet a window of frames at a time, on any ComfyUI this pack supports.

A DIFFUSION_MODEL wrapper on a clone splits each call's batch (every cond/uncond video of it) into overlapping
windows of consecutive frames, runs the UNet on each, and blends the overlaps (tav_core.frame_windows). The
window holding frame 0 runs first and records frame 0's keys and values in every sparse-causal layer; the later
windows read them as their frame 0, so appearance is anchored to one frame across the clip, and each window hands
the next the keys and values of the frame before the next one's first (tav_core.anchor_frames). Everything the
UNet gets per row (latents, timesteps, text context, SDXL's vector, ControlNet residuals, sigmas) is cut to the
window; temporal layers, GroupNorm statistics and motion modules see the window as the video.
"""

import comfy.patcher_extension
import torch

from ..tav_core.anchor_frames import AnchorFrames
from ..tav_core.errors import TAVInputError
from ..tav_core.frame_windows import FrameWindow, WindowBlend, frame_windows
from ..tav_core.video_batch import frames_per_video
from .unet_forward import ForwardState, published, videos_in

FRAME_WINDOWS_KEY = "tav_frame_windows"
FRAME_WINDOW_OPTION = "tav_frame_window"  # transformer_options: the window, for the pack's video controls
OPTIONS_ARG = 4  # transformer_options' place among the UNet's arguments after x


def check_window(window: int | None, overlap: int | None, frames: int | None, node: str) -> None:
    """window 0 (the whole clip) or at least 2 frames, within the clip; overlap below the window. None: not known
    yet (a linked input, or the clip before the node runs)."""
    if window is None:
        return
    if window < 0 or window == 1:
        raise TAVInputError(node, "window", f"{window}: use 0 for the whole clip, or a window of 2 frames or more.")
    if frames is not None and window > frames:
        raise TAVInputError(
            node, "window", f"{window} frames, but the clip has {frames}.", f"Use a window up to {frames}, or 0.",
        )
    if window and overlap is not None and not 0 <= overlap < window:
        raise TAVInputError(
            node, "overlap", f"{overlap}: the overlap must be at least 0 and below the window ({window}).",
            f"Use an overlap up to {window - 1} (a quarter to a half of the window blends well).",
        )


def window_rows(window: FrameWindow, videos: int, frames: int, device: torch.device) -> torch.Tensor:
    """Batch rows of one window in every video of a (videos*frames) batch."""
    offsets = torch.arange(videos, device=device).unsqueeze(1) * frames
    return (offsets + torch.arange(window.start, window.stop, device=device)).reshape(-1)


def rows_of(value, rows: torch.Tensor, batch: int):
    """`value` cut to `rows` where it holds one entry per batch row (tensors, and lists and dicts of them)."""
    if isinstance(value, torch.Tensor):
        return value.index_select(0, rows.to(value.device)) if value.ndim and value.shape[0] == batch else value
    if isinstance(value, dict):
        return {key: rows_of(item, rows, batch) for key, item in value.items()}
    if isinstance(value, list):
        return [rows_of(item, rows, batch) for item in value]
    return value


def window_options(transformer_options: dict, rows: torch.Tensor, batch: int) -> dict:
    """The sampling options for one window: its own rows of the per-row sigmas, everything else shared."""
    options = dict(transformer_options)
    if isinstance(options.get("sigmas"), torch.Tensor):
        options["sigmas"] = rows_of(options["sigmas"], rows, batch)
    return options


def carry_index(windows: list[FrameWindow], index: int) -> int | None:
    """Where in window `index` the frame lies that the next window's first frame follows (None: no next window)."""
    if index + 1 >= len(windows):
        return None
    return windows[index + 1].start - 1 - windows[index].start


class FrameWindows:
    """DIFFUSION_MODEL wrapper: the UNet on overlapping windows of `window` frames, anchored on frame 0."""

    def __init__(self, window: int, overlap: int) -> None:
        self.window = window
        self.overlap = overlap

    def __deepcopy__(self, memo: dict) -> "FrameWindows":
        return self  # immutable; ModelPatcher.clone deep-copies model_options

    def __call__(self, executor, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        # UNetModel.forward hands on (x, timesteps, context, y, control, transformer_options, **kwargs).
        positional = len(args) > OPTIONS_ARG
        transformer_options = args[OPTIONS_ARG] if positional else kwargs.get("transformer_options", {})
        videos = videos_in(transformer_options)
        frames = frames_per_video(x.shape[0], videos)
        windows = frame_windows(frames, self.window, self.overlap)
        if len(windows) == 1:
            return executor(x, *args, **kwargs)
        anchors = AnchorFrames(carry_at=carry_index(windows, 0))
        blend = WindowBlend(frames, self.overlap)
        for index, window in enumerate(windows):  # the first window holds frame 0: it records, the others read
            rows = window_rows(window, videos, frames, x.device)
            options = window_options(transformer_options, rows, x.shape[0])
            window_args = [options if i == OPTIONS_ARG else rows_of(a, rows, x.shape[0]) for i, a in enumerate(args)]
            window_kwargs = {key: options if key == "transformer_options" else rows_of(value, rows, x.shape[0])
                             for key, value in kwargs.items()}
            with published(ForwardState(videos, options, anchors)):
                out = executor(x.index_select(0, rows), *window_args, **window_kwargs)
            anchors.next_window(carry_index(windows, index + 1))
            blend.add(window, out.view(videos, window.stop - window.start, *out.shape[1:]))
        return blend.result(out.dtype).reshape(x.shape[0], *out.shape[1:])


def in_windows(model, window: int, overlap: int):
    """A clone of `model` that runs its UNet in frame windows; `model` itself where window is 0."""
    if not window:
        return model
    windowed = model.clone()
    windowed.model_options["transformer_options"][FRAME_WINDOW_OPTION] = window
    comfy.patcher_extension.add_wrapper_with_key(
        comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, FRAME_WINDOWS_KEY, FrameWindows(window, overlap),
        windowed.model_options, is_model_options=True,
    )
    return windowed
