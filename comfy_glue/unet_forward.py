"""What a patched UNet layer knows of the forward pass it runs in: how the batch splits into videos, and
ComfyUI's sampling options (for its attention choice and overrides), also where ComfyUI hands it none."""

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass

import comfy.ldm.modules.attention as comfy_attention
import torch

from ..tav_core.anchor_frames import AnchorFrames
from ..tav_core.frame_attention import AttentionFn
from ..tav_core.video_batch import frames_per_video, peek_videos, videos_in_batch

VIDEO_BATCH_WRAPPER_KEY = "tav_video_batch"

_sampling_options: ContextVar[dict | None] = ContextVar("tav_sampling_options", default=None)
_anchor_frames: ContextVar[AnchorFrames | None] = ContextVar("tav_anchor_frames", default=None)


def videos_in(transformer_options: dict) -> int:
    """Each cond/uncond chunk of a sampling batch is one video."""
    return len(transformer_options.get("cond_or_uncond") or (0,))


def comfy_attention_fn(attn_precision: torch.dtype | None, transformer_options: dict) -> AttentionFn:
    """ComfyUI's optimised attention (SDPA, flash, xformers, sage... as the user chose), looked up at call time."""
    def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
        return comfy_attention.optimized_attention(
            q, k, v, heads, attn_precision=attn_precision, transformer_options=transformer_options
        )
    return attention


def sampling_options() -> dict:
    """The transformer options of the forward pass running now ({} outside one)."""
    return _sampling_options.get() or {}


def anchor_frames() -> AnchorFrames | None:
    """The clip's frame 0 where the batch is a later window of a long clip (None for a whole clip)."""
    return _anchor_frames.get()


@dataclass(frozen=True)
class ForwardState:
    """A snapshot of what the running forward pass published, to recompute a layer later (checkpointing)."""

    videos: int | None
    options: dict | None
    anchors: AnchorFrames | None = None


def forward_state() -> ForwardState:
    return ForwardState(peek_videos(), _sampling_options.get(), _anchor_frames.get())


@contextlib.contextmanager
def published(state: ForwardState) -> Iterator[None]:
    """Publish a video layout and sampling options for the layers that run inside (nothing, for an empty state:
    a compiled layer then traces no context variable)."""
    if state.options is None and state.videos is None and state.anchors is None:
        yield
        return
    token = _sampling_options.set(state.options)
    anchor_token = _anchor_frames.set(state.anchors)
    try:
        with videos_in_batch(state.videos) if state.videos is not None else contextlib.nullcontext():
            yield
    finally:
        _anchor_frames.reset(anchor_token)
        _sampling_options.reset(token)


def video_batch_wrapper(executor, *args, **kwargs):
    """DIFFUSION_MODEL wrapper: publish the batch's video layout and options for the layers that get none."""
    x = args[0] if args else kwargs["x"]
    transformer_options = args[5] if len(args) > 5 else kwargs.get("transformer_options", {})
    videos = videos_in(transformer_options)
    frames_per_video(x.shape[0], videos)  # a clear error for a batch that does not split into videos
    with published(ForwardState(videos, transformer_options, anchor_frames())):
        return executor(*args, **kwargs)
