"""Cross-frame attention against an independent naive computation, for every mode."""

import math

import comfy.ldm.modules.attention as comfy_attention
import pytest
import torch
from comfyui_tune_a_video.comfy_glue.unet_inflation import CrossFrameAttn1
from comfyui_tune_a_video.tav_core.frame_attention import cross_frame_attention, sdpa_attention
from comfyui_tune_a_video.tav_core.inflation_config import AttentionMode

VIDEOS, FRAMES, TOKENS, HEADS, DIM_HEAD = 2, 5, 6, 2, 8


def source_frames(mode: AttentionMode, i: int, frames: int = FRAMES) -> list[int]:
    if mode == AttentionMode.SPARSE_CAUSAL:
        return [0, max(i - 1, 0)]
    if mode == AttentionMode.FIRST_FRAME:
        return [0]
    if mode == AttentionMode.PER_FRAME:
        return [i]
    return list(range(frames))


def naive_attention(q, k, v, mode, frames_per_video: int = FRAMES):
    """Explicit per-video, per-frame, per-head gather and softmax(QK^T / sqrt(d)) V."""
    out = torch.empty_like(q)
    for video in range(VIDEOS):
        for i in range(frames_per_video):
            row = video * frames_per_video + i
            frames = [video * frames_per_video + j for j in source_frames(mode, i, frames_per_video)]
            keys, values = torch.cat([k[f] for f in frames]), torch.cat([v[f] for f in frames])
            for h in range(HEADS):
                cols = slice(h * DIM_HEAD, (h + 1) * DIM_HEAD)
                scores = q[row, :, cols] @ keys[:, cols].T / math.sqrt(DIM_HEAD)
                out[row, :, cols] = scores.softmax(dim=-1) @ values[:, cols]
    return out


def random_qkv(seed: int, frames: int = FRAMES):
    generator = torch.Generator().manual_seed(seed)
    shape = (VIDEOS * frames, TOKENS, HEADS * DIM_HEAD)
    return [torch.randn(shape, generator=generator, dtype=torch.float64).float() for _ in range(3)]


@pytest.mark.parametrize("mode", list(AttentionMode))
def test_matches_naive_with_plain_sdpa(mode):
    q, k, v = random_qkv(1)
    got = cross_frame_attention(q, k, v, heads=HEADS, videos=VIDEOS, mode=mode, attention=sdpa_attention)
    torch.testing.assert_close(got, naive_attention(q, k, v, mode), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("mode", list(AttentionMode))
def test_attn1_patch_matches_naive_with_comfy_attention(mode):
    """The object ComfyUI calls as the attn1 replacement, using ComfyUI's optimised attention."""
    q, k, v = random_qkv(2)
    extra_options = {"n_heads": HEADS, "dim_head": DIM_HEAD, "attn_precision": None, "cond_or_uncond": [1, 0]}
    got = CrossFrameAttn1(mode)(q, k, v, extra_options)
    torch.testing.assert_close(got, naive_attention(q, k, v, mode), atol=1e-5, rtol=1e-5)


def test_sparse_causal_frame0_is_plain_self_attention():
    q, k, v = random_qkv(3)
    got = cross_frame_attention(q, k, v, heads=HEADS, videos=VIDEOS, mode=AttentionMode.SPARSE_CAUSAL)
    plain = comfy_attention.attention_basic(q, k, v, HEADS)
    for video in range(VIDEOS):
        first = video * FRAMES
        torch.testing.assert_close(got[first], plain[first], atol=1e-5, rtol=1e-5)
        assert not torch.allclose(got[first + 2], plain[first + 2], atol=1e-3)  # frame i >= 1 does not see itself


@pytest.mark.parametrize("mode", [AttentionMode.SPARSE_CAUSAL, AttentionMode.FIRST_FRAME])
def test_a_later_window_given_frame_0_and_the_frame_before_computes_its_rows_of_the_whole_clip(mode):
    """Frames 4..8 of a 12-frame clip, as a window: with the clip's frame 0 (first) and frame 3 (before) handed in,
    its attention is the naive whole-clip attention's rows for those frames."""
    clip, start = 12, 4
    q, k, v = random_qkv(5, clip)
    rows = torch.tensor([video * clip + start + i for video in range(VIDEOS) for i in range(FRAMES)])
    per_video = [t.view(VIDEOS, clip, TOKENS, -1) for t in (k, v)]
    first = tuple(t[:, 0] for t in per_video)
    before = tuple(t[:, start - 1] for t in per_video)
    got = cross_frame_attention(q[rows], k[rows], v[rows], heads=HEADS, videos=VIDEOS, mode=mode,
                                first=first, before=before)
    torch.testing.assert_close(got, naive_attention(q, k, v, mode, clip)[rows], atol=1e-5, rtol=1e-5)


def test_batch_that_does_not_split_into_videos_is_an_error():
    q, k, v = random_qkv(4)
    with pytest.raises(ValueError, match="cannot be split into 3 videos"):
        cross_frame_attention(q, k, v, heads=HEADS, videos=3, mode=AttentionMode.FULL)
