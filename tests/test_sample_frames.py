"""TAV Sample Frames: which frames are kept and how they are sized."""

import cv2
import numpy as np
import pytest
import torch
from comfyui_tune_a_video.nodes.sample_frames import SampleFrames
from comfyui_tune_a_video.tav_core.errors import TAVInputError


def numbered_clip(frames: int, height: int = 40, width: int = 80) -> torch.Tensor:
    """Frame i is a horizontal gradient whose first channel encodes i."""
    clip = np.zeros((frames, height, width, 3), dtype=np.float32)
    clip[..., 1] = np.linspace(0, 1, width, dtype=np.float32)[None, None, :]
    clip[..., 0] = (np.arange(frames, dtype=np.float32) / frames)[:, None, None]
    return torch.from_numpy(clip)


def run(clip, count, start, stride, width, height, resize):
    return SampleFrames.execute(clip, count, start, stride, width, height, resize).result[0]


def test_keeps_count_frames_from_start_every_stride():
    clip = numbered_clip(10)
    out = run(clip, 3, 1, 2, 80, 40, "stretch")
    assert out.shape == (3, 40, 80, 3)
    assert torch.allclose(out[:, 0, 0, 0], torch.tensor([1, 3, 5]) / 10, atol=1e-6)


def test_crop_fills_and_cuts_the_centre():
    clip = numbered_clip(1)
    out = run(clip, 1, 0, 1, 32, 32, "crop")[0].numpy()
    scaled = cv2.resize(clip[0].numpy(), (64, 32), interpolation=cv2.INTER_AREA)  # covers 32x32, keeps aspect
    np.testing.assert_allclose(out, scaled[:, 16:48], atol=1e-6)


def test_pad_fits_inside_with_black_borders():
    clip = numbered_clip(1)
    out = run(clip, 1, 0, 1, 32, 32, "pad")[0].numpy()
    scaled = cv2.resize(clip[0].numpy(), (32, 16), interpolation=cv2.INTER_AREA)
    np.testing.assert_allclose(out[8:24], scaled, atol=1e-6)
    assert not out[:8].any() and not out[24:].any()


def test_stretch_ignores_aspect():
    clip = numbered_clip(1)
    out = run(clip, 1, 0, 1, 32, 32, "stretch")[0].numpy()
    np.testing.assert_allclose(out, cv2.resize(clip[0].numpy(), (32, 32), interpolation=cv2.INTER_AREA), atol=1e-6)


def test_upscaling_stays_in_range():
    out = run(numbered_clip(2, 8, 8), 2, 0, 1, 64, 64, "crop")
    assert out.shape == (2, 64, 64, 3) and float(out.min()) >= 0 and float(out.max()) <= 1


def test_too_short_video_names_the_numbers():
    expected = (r"TAV Sample Frames: input 'count': the video has 10 frames, but 24 frames from frame 0 every 2 need "
                r"47 frames\. Lower count or stride, or start earlier\.$")
    with pytest.raises(TAVInputError, match=expected):
        run(numbered_clip(10), 24, 0, 2, 64, 64, "crop")
    with pytest.raises(TAVInputError, match=r"the video has 1 frame, but 2 frames from frame 0 every 1 need 2 frames"):
        run(numbered_clip(1), 2, 0, 1, 64, 64, "crop")


def test_sizes_and_counts_are_checked_when_queued():
    assert SampleFrames.validate_inputs(width=64, height=64, count=24, start=0, stride=2) is True
    assert "input 'height': 60 is not a multiple of 8" in SampleFrames.validate_inputs(height=60)
    assert "input 'count': 0 is outside 1 .. 1024" in SampleFrames.validate_inputs(count=0)


def test_size_must_be_a_multiple_of_8():
    with pytest.raises(TAVInputError, match="TAV Sample Frames: input 'height': 60 is not a multiple of 8"):
        run(numbered_clip(4), 2, 0, 1, 64, 60, "crop")
