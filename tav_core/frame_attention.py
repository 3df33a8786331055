"""Cross-frame spatial self-attention: which frames' keys/values each frame's queries read.

Keys and values are gathered after the q/k/v projections (each frame's tokens are projected once,
as in the reference), then handed to an attention function such as ComfyUI's optimised attention,
so no f x 2N score matrix is ever built here.
"""

from collections.abc import Callable

import torch

from .inflation_config import AttentionMode
from .video_batch import frames_per_video

# (q, k, v, heads) -> out; tensors are (batch, tokens, heads * dim_head); k/v may have more tokens.
AttentionFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, int], torch.Tensor]


def sdpa_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    """Plain multi-head scaled-dot-product attention, for use without ComfyUI."""
    b, _, inner = q.shape
    d = inner // heads
    q, k, v = (t.view(b, -1, heads, d).transpose(1, 2) for t in (q, k, v))
    out = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    return out.transpose(1, 2).reshape(b, -1, inner)


def previous_frame_index(frames: int, device: torch.device) -> torch.Tensor:
    """Frame i-1 for every frame i; frame 0 uses itself."""
    return (torch.arange(frames, device=device) - 1).clamp_(min=0)


def sparse_causal_context(
    x: torch.Tensor, videos: int, first: torch.Tensor | None = None, before: torch.Tensor | None = None
) -> torch.Tensor:
    """(videos*frames, N, C) -> (videos*frames, 2N, C): [frame 0 tokens ; frame i-1 tokens] per frame.

    first: (videos, N, C) tokens to read as frame 0 (the clip's, for a window that starts later); before: (videos,
    N, C) tokens of the frame before the batch's first frame (the previous window's), read as its frame i-1."""
    bf, n, c = x.shape
    f = frames_per_video(bf, videos)
    per_video = x.view(videos, f, n, c)
    first = (per_video[:, :1] if first is None else first.unsqueeze(1)).expand(videos, f, n, c)
    if before is None:
        previous = per_video.index_select(1, previous_frame_index(f, x.device))
    else:
        previous = torch.cat((before.unsqueeze(1), per_video[:, :-1]), dim=1)
    return torch.cat((first, previous), dim=2).view(bf, 2 * n, c)


def cross_frame_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    heads: int,
    videos: int,
    mode: AttentionMode,
    attention: AttentionFn = sdpa_attention,
    first: tuple[torch.Tensor, torch.Tensor] | None = None,
    before: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Attention of projected q/k/v, each (videos*frames, N, C), with keys/values chosen by `mode`.

    first: frame 0's keys and values, (videos, N, C) each, where they are not this batch's first frames (a later
    window of a long clip); sparse-causal and first-frame attention read them. before: the keys and values of the
    frame before this batch's first (the previous window's), which sparse-causal attention reads as that frame's
    previous. Full attention stays in the batch."""
    bf, n, c = q.shape
    f = frames_per_video(bf, videos)
    k0, v0 = first if first is not None else (None, None)
    kb, vb = before if before is not None else (None, None)
    if mode == AttentionMode.SPARSE_CAUSAL:
        return attention(
            q, sparse_causal_context(k, videos, k0, kb), sparse_causal_context(v, videos, v0, vb), heads
        )
    if mode == AttentionMode.PER_FRAME:  # the image model's own attention (Inflate UNet then installs no patch)
        return attention(q, k, v, heads)
    # The other modes share one key/value set per video: attend with all of a video's queries at once.
    q_video = q.reshape(videos, f * n, c)
    if mode == AttentionMode.FIRST_FRAME:
        k_video, v_video = (k.view(videos, f, n, c)[:, 0], v.view(videos, f, n, c)[:, 0]) if first is None else first
    elif mode == AttentionMode.FULL:
        k_video, v_video = k.reshape(videos, f * n, c), v.reshape(videos, f * n, c)
    else:
        raise ValueError(f"unknown attention mode {mode!r}")
    return attention(q_video, k_video, v_video, heads).reshape(bf, n, c)
