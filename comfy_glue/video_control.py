"""ControlNet / T2I-Adapter hints that follow the frames of a video.

ComfyUI maps F hint frames onto the F latent frames of each cond/uncond chunk, but not onto a
context window (a window of frames 8-15 would get hints 0-7), and a T2I-Adapter keeps the features
of the first batch layout it saw. A video control picks, for every call, the hints of exactly the
frames in that call, for every chunk, and drops the cached hint when that choice changes.

ComfyUI runs the controls on the whole batch before the UNet. On a model that runs in the pack's frame windows
(comfy_glue.frame_windowing), a video control runs on consecutive runs of at most a window of frames instead, so
its memory follows the window as the UNet's does; a control sees one frame at a time (it is an image model), so the
pieces put together are the whole batch's residuals.
"""

import importlib

import torch
from comfy.controlnet import ControlBase

from ..tav_core.errors import TAVInputError
from ..tav_core.frame_windows import FrameWindow
from .frame_windowing import FRAME_WINDOW_OPTION, rows_of, window_rows

HINT_FRAMES_OPTION = "tav_hint_frames"  # the video frames of a control call on part of the batch


def frames_of_window(window) -> tuple[int, ...]:
    """The video frames a context-window call sees: newer ComfyUI may prepend the frame before the window."""
    if window is None:
        return ()
    anchor = getattr(window, "causal_anchor_index", None)
    return ((anchor,) if anchor is not None and anchor >= 0 else ()) + tuple(window.index_list)


def frames_in_call(transformer_options: dict, frames: int) -> tuple[int, ...] | None:
    """The video frames of each chunk of a control call that holds part of the video (a piece of a windowed call, or
    a core context window), or None where the call holds the whole video."""
    chosen = transformer_options.get(HINT_FRAMES_OPTION) or frames_of_window(transformer_options.get("context_window"))
    return chosen if len(chosen) == frames else None


def hint_count_problem(hints: int, frames: int) -> str:
    return f"{hints} hint frames for a video of {frames} frames: give one hint per frame, or a single hint for all."


class VideoHintControl:
    """Mixin for a ControlBase subclass: hint k conditions latent frame k in every chunk and context window."""

    tav_frame_hints: torch.Tensor  # (F or 1, C, H, W), the hints of the whole video
    tav_node: str  # the node that attached the hints, for errors raised while sampling
    tav_layout: tuple | None = None

    def get_control(self, x_noisy, t, cond, batched_number, transformer_options):
        window = transformer_options.get(FRAME_WINDOW_OPTION)
        if window and x_noisy.shape[0] // batched_number > window:
            return self.tav_control_in_pieces(x_noisy, t, cond, batched_number, transformer_options, window)
        self.tav_select_hints(x_noisy.shape[0], batched_number, transformer_options)
        return super().get_control(x_noisy, t, cond, batched_number, transformer_options)

    def tav_control_in_pieces(self, x_noisy, t, cond, videos: int, transformer_options: dict, window: int):
        """The control (and its chain) on `window` consecutive frames of every video at a time, put together."""
        batch = x_noisy.shape[0]
        frames = batch // videos
        in_call = frames_in_call(transformer_options, frames) or tuple(range(frames))
        options = {key: value for key, value in transformer_options.items() if key != FRAME_WINDOW_OPTION}
        whole = None
        for start in range(0, frames, window):
            piece = FrameWindow(start, min(start + window, frames))
            rows = window_rows(piece, videos, frames, x_noisy.device)
            control = self.get_control(
                x_noisy.index_select(0, rows), rows_of(t, rows, batch), rows_of(cond, rows, batch), videos,
                {**options, HINT_FRAMES_OPTION: in_call[piece.start:piece.stop]},
            )
            if control is None:  # outside the control's timestep range: so is every piece
                return None
            if whole is None:
                whole = {name: [None if part is None else part.new_empty((batch, *part.shape[1:])) for part in parts]
                         for name, parts in control.items()}
            for name, parts in control.items():
                for into, part in zip(whole[name], parts, strict=True):
                    if part is not None:
                        into.index_copy_(0, rows, part)
        return whole

    def tav_select_hints(self, batch: int, chunks: int, transformer_options: dict) -> None:
        frames = batch // chunks
        hints = self.tav_frame_hints
        indices = None
        if hints.shape[0] > 1:
            window_frames = frames_in_call(transformer_options, frames)
            indices = window_frames or tuple(range(frames))
            if (window_frames is None and hints.shape[0] != frames) or max(indices) >= hints.shape[0]:
                raise ValueError(f"{self.tav_node}: {hint_count_problem(hints.shape[0], frames)}")
        layout = (chunks, indices)
        if layout == self.tav_layout:
            return
        self.cond_hint_original = hints if indices is None else hints[list(indices)].repeat(chunks, 1, 1, 1)
        # Resized (and, where needed, VAE-encoded) again from the new selection; a T2I-Adapter also
        # recomputes its features whenever its resized hint is rebuilt.
        self.cond_hint = None
        self.tav_layout = layout

    def copy(self):
        return make_video_control(super().copy(), self.tav_frame_hints, self.tav_node)


_video_classes: dict[type, type] = {}


def make_video_control(control: ControlBase, hints: torch.Tensor, node: str) -> ControlBase:
    """Turn a fresh control (a copy made for this conditioning) into its video-aware subclass."""
    base = type(control)
    if not issubclass(base, VideoHintControl):
        if base not in _video_classes:
            _video_classes[base] = type(f"Video{base.__name__}", (VideoHintControl, base), {})
        control.__class__ = _video_classes[base]
    control.tav_frame_hints = hints
    control.tav_node = node
    control.tav_layout = None
    return control


def controls_in(conditioning: list):
    """Every control in a CONDITIONING, following each chain of previous controls."""
    for _, options in conditioning:
        control = options.get("control")
        while control is not None:
            yield control
            control = control.previous_controlnet


def check_hint_counts(conditioning: list, frames: int, node: str, input_name: str) -> None:
    for control in controls_in(conditioning):
        hints = getattr(control, "tav_frame_hints", None)
        if hints is None:
            hints = control.cond_hint_original
        if hints is not None and hints.shape[0] not in (1, frames):
            raise TAVInputError(node, input_name, hint_count_problem(hints.shape[0], frames))


def stock_node_class(name: str) -> type:
    """A node class of ComfyUI's own top-level nodes.py, which shares its module name with this pack's nodes/.

    Imported on use: that module pulls in comfy_api and PyAV, which inversion and sampling without hints never
    need (the GPU benchmark's bare image has no PyAV).
    """
    comfyui_nodes_module = importlib.import_module("nodes")
    return comfyui_nodes_module.NODE_CLASS_MAPPINGS[name]


def apply_video_control(
    positive: list, negative: list, control_net: ControlBase, hints: torch.Tensor, strength: float,
    start_percent: float, end_percent: float, node: str, vae=None,
) -> tuple[list, list]:
    """The stock ControlNetApplyAdvanced (chaining included), with its new controls made video-aware."""
    before = {id(control) for control in controls_in(positive + negative)}
    positive, negative = stock_node_class("ControlNetApplyAdvanced")().apply_controlnet(
        positive, negative, control_net, hints, strength, start_percent, end_percent, vae=vae
    )
    hint_batch = hints.movedim(-1, 1)
    for conditioning in (positive, negative):
        for _, options in conditioning:
            control = options.get("control")
            if control is not None and id(control) not in before:
                make_video_control(control, hint_batch, node)
    return positive, negative
