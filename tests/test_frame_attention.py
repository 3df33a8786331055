"""Cross-frame attention against an independent naive computation, for every mode."""

import math

import comfy.ldm.modules.attention as comfy_attention
import pytest
import torch
from comfyui_tune_a_video.comfy_glue.unet_inflation import CrossFrameAttn1
from comfyui_tune_a_video.tav_core.frame_attention import cross_frame_attention, sdpa_attention
from comfyui_tune_a_video.tav_core.inflation_config import AttentionMode

VIDEOS, FRAMES, TOKENS, HEADS, DIM_HEAD = 2, 5, 6, 2, 8


def source_frames(mode: AttentionMode, i: int) -> list[int]:
    if mode == AttentionMode.SPARSE_CAUSAL:
        return [0, max(i - 1, 0)]
    if mode == AttentionMode.FIRST_FRAME:
        return [0]
    if mode == AttentionMode.PER_FRAME:
        return [i]
    return list(range(FRAMES))


def naive_attention(q, k, v, mode):
    """Explicit per-video, per-frame, per-head gather and softmax(QK^T / sqrt(d)) V."""
    out = torch.empty_like(q)
    for video in range(VIDEOS):
        for i in range(FRAMES):
            row = video * FRAMES + i
            frames = [video * FRAMES + j for j in source_frames(mode, i)]
            keys, values = torch.cat([k[f] for f in frames]), torch.cat([v[f] for f in frames])
            for h in range(HEADS):
                cols = slice(h * DIM_HEAD, (h + 1) * DIM_HEAD)
                scores = q[row, :, cols] @ keys[:, cols].T / math.sqrt(DIM_HEAD)
                out[row, :, cols] = scores.softmax(dim=-1) @ values[:, cols]
    return out


def random_qkv(seed: int):
    generator = torch.Generator().manual_seed(seed)
    shape = (VIDEOS * FRAMES, TOKENS, HEADS * DIM_HEAD)
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


def test_batch_that_does_not_split_into_videos_is_an_error():
    q, k, v = random_qkv(4)
    with pytest.raises(ValueError, match="cannot be split into 3 videos"):
        cross_frame_attention(q, k, v, heads=HEADS, videos=3, mode=AttentionMode.FULL)
