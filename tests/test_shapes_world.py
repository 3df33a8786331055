"""The shapes world and its OpenCV judge: the instrument must be right before it measures anything."""

import numpy as np
from comfyui_tune_a_video.shapes_demo.judge import judge
from comfyui_tune_a_video.shapes_demo.world import (
    BACKGROUNDS,
    BORDER,
    COLOURS,
    PATHS,
    all_captions,
    random_clip,
    random_scene,
    render,
)


def test_every_object_stays_whole_inside_the_frame():
    """A shape cut by the frame's edge is one no caption describes (and one the demo model rarely saw): every
    scene and every clip frame keeps BORDER pixels of background all round."""
    rng = np.random.default_rng(3)
    frames = [render(random_scene(rng)) for _ in range(2000)]
    frames += [frame for seed in range(40) for frame in random_clip(seed, frames=8, path=PATHS[seed % 4]).frames]
    ring = np.ones(frames[0].shape[:2], bool)
    ring[BORDER:-BORDER, BORDER:-BORDER] = False
    for frame in frames:
        assert (frame[ring] == frame[0, 0]).all()


def test_judge_is_right_on_generated_frames():
    rng = np.random.default_rng(0)
    scenes = [random_scene(rng) for _ in range(1000)]
    right = {"background": 0, "colour": 0, "shape": 0}
    centroid_errors = []
    for scene in scenes:
        verdict = judge(render(scene))
        right["background"] += verdict.background == scene.background
        right["colour"] += verdict.colour == scene.colour
        right["shape"] += verdict.shape == scene.shape
        centroid_errors.append(np.hypot(verdict.centroid[0] - scene.cx, verdict.centroid[1] - scene.cy))
    assert all(count >= 990 for count in right.values()), right
    assert np.median(centroid_errors) < 1.0 and max(centroid_errors) < 4.0


def test_captions_cover_the_world_and_never_hide_the_object():
    captions = all_captions()
    assert len(captions) == len(set(captions)) == (len(BACKGROUNDS) * len(COLOURS) - 1) * 3
    rng = np.random.default_rng(1)
    assert all(s.colour != s.background for s in (random_scene(rng) for _ in range(500)))


def test_clips_move_along_their_path():
    for seed, path in enumerate(PATHS):
        clip = random_clip(seed, frames=12, path=path)
        assert clip.frames.shape == (12, 64, 64, 3) and clip.frames.dtype == np.uint8
        verdicts = [judge(frame) for frame in clip.frames]
        assert all(v.matches(clip.scenes[0].colour, clip.scenes[0].shape, clip.scenes[0].background) for v in verdicts)
        measured = np.array([v.centroid for v in verdicts])
        assert np.abs(measured - clip.centroids).max() < 2.0, path
        assert np.linalg.norm(clip.centroids[-1] - clip.centroids[0]) > 5 or path == "bounce"
