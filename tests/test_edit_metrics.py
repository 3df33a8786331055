"""The edit metrics against clips whose truth is known by construction."""

import math

import numpy as np
import pytest
from comfyui_tune_a_video.shapes_demo.metrics import score_edit
from comfyui_tune_a_video.shapes_demo.world import Scene, parse_caption, random_clip, render


def shifted(clip, dx: float, colour: str | None = None) -> np.ndarray:
    return np.stack([
        render(Scene(s.background, colour or s.colour, s.shape, s.cx + dx, s.cy, s.size)) for s in clip.scenes
    ])


def test_the_source_scores_perfectly_against_itself():
    clip = random_clip(4, frames=8, path="arc")
    score = score_edit(clip.frames, clip.frames, parse_caption(clip.caption))
    assert (score.text_alignment, score.object_found, score.consistency) == (1.0, 1.0, 1.0)
    assert score.motion_error == 0.0 and score.psnr == math.inf and score.area_change < 0.05


def test_motion_error_is_the_shift_and_colour_edits_are_judged():
    clip = random_clip(6, frames=8, path="linear")
    scene = clip.scenes[0]
    new_colour = next(c for c in ("red", "green", "orange") if c not in (scene.colour, scene.background))
    edited = shifted(clip, 3.0, new_colour)
    score = score_edit(edited, clip.frames, (new_colour, scene.shape, scene.background))
    assert score.text_alignment == 1.0
    assert score.motion_error == pytest.approx(3.0, abs=0.5)
    assert score_edit(edited, clip.frames, parse_caption(clip.caption)).text_alignment == 0.0


def test_empty_frames_count_as_missing_objects():
    clip = random_clip(7, frames=4)
    blank = np.repeat(clip.frames[:, :1, :1], 64, axis=1).repeat(64, axis=2)  # the background colour only
    score = score_edit(blank, clip.frames, parse_caption(clip.caption))
    assert score.object_found == 0.0 and score.text_alignment == 0.0 and score.consistency == 0.0
    assert math.isnan(score.motion_error)


@pytest.mark.parametrize("text", ["a red circle on a pink background", "a red circle", "red circle on a blue sky"])
def test_parse_caption_refuses_other_text(text):
    with pytest.raises(ValueError, match="caption"):
        parse_caption(text)


def test_end_drift_counts_the_last_quarter_that_left_the_first_frames_look():
    clip = random_clip(9, frames=48, path="bounce")
    scene = clip.scenes[0]
    assert score_edit(clip.frames, clip.frames, parse_caption(clip.caption)).end_drift == 0.0
    other = next(c for c in ("red", "green", "orange") if c not in (scene.colour, scene.background))
    drifting = clip.frames.copy()
    drifting[42:] = shifted(clip, 0.0, other)[42:]  # the last 6 of the last quarter's 12 frames change colour
    assert score_edit(drifting, clip.frames, parse_caption(clip.caption)).end_drift == pytest.approx(0.5)
    blank_start = drifting.copy()
    blank_start[0] = clip.frames[0, :1, :1]
    assert math.isnan(score_edit(blank_start, clip.frames, parse_caption(clip.caption)).end_drift)
