"""benchmarks/shapes_interpolate.py: its frame selection and metrics on clips of known truth, and one short case
end to end on a real headless ComfyUI."""

import dataclasses
import importlib.util
import math

import cv2
import numpy as np
import pytest
from comfyui_tune_a_video.shapes_demo.world import Scene, random_clip, render
from tav_dev.comfy_host import REPO

_spec = importlib.util.spec_from_file_location("shapes_interpolate", REPO / "benchmarks" / "shapes_interpolate.py")
shapes_interpolate = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(shapes_interpolate)


def target_of(clip) -> tuple[str, str, str]:
    scene = clip.scenes[0]
    return scene.colour, scene.shape, scene.background


def test_every_other_frame_is_kept_and_the_rest_are_the_truth():
    kept, dropped = shapes_interpolate.split_frames(16)
    assert kept == [0, 2, 4, 6, 8, 10, 12, 14] and dropped == [1, 3, 5, 7, 9, 11, 13]
    assert shapes_interpolate.split_frames(5) == ([0, 2, 4], [1, 3])
    frames = np.arange(15)[:, None, None, None] * np.ones((1, 2, 2, 3), np.uint8)
    clip = shapes_interpolate.interleave(frames[0::2], shapes_interpolate.inbetweens(frames))
    assert (clip == frames).all(), "keyframes at even positions, in-betweens at odd ones"
    assert (shapes_interpolate.repeat_inbetweens(frames[0::2])[:, 0, 0, 0] == [0, 2, 4, 6, 8, 10, 12]).all()


def test_the_true_frames_score_perfectly_and_repeat_misses_by_the_step():
    clip = random_clip(1, frames=16, path="linear")
    kept, dropped = shapes_interpolate.split_frames(16)
    perfect = shapes_interpolate.summarise(
        shapes_interpolate.score_frames(clip.frames[dropped], clip.frames[dropped], target_of(clip)))
    assert perfect["right_object"] == 1.0 and perfect["one_object"] == 1.0 and perfect["on_the_spot"] == 1.0
    assert perfect["centroid_error"] == 0.0 and perfect["area_error"] == 0.0
    step = abs(clip.centroids[1, 0] - clip.centroids[0, 0])  # a linear path: the same x step every frame
    repeat = shapes_interpolate.score_frames(
        shapes_interpolate.repeat_inbetweens(clip.frames[kept]), clip.frames[dropped], target_of(clip))
    assert all(score.right_object and score.objects == 1 for score in repeat)
    assert all(score.centroid_error == pytest.approx(step, abs=0.5) for score in repeat), (step, repeat)
    assert shapes_interpolate.summarise(repeat)["area_error"] < 0.05
    assert not shapes_interpolate.score_frames(clip.frames[:1], clip.frames[:1], ("green", "square", "gray"))[0] \
        .right_object


def test_a_blend_of_two_far_apart_positions_shows_two_half_objects_and_an_empty_frame_none():
    square = Scene("white", "red", "square", 16.0, 32.0, 10.0)
    apart = [render(dataclasses.replace(square, cx=x)) for x in (16.0, 48.0)]
    blend = ((apart[0].astype(np.float64) + apart[1]) / 2).round().astype(np.uint8)
    assert shapes_interpolate.count_objects(blend) == 2
    assert shapes_interpolate.count_objects(apart[0]) == 1
    empty = np.full_like(blend, 250)
    score = shapes_interpolate.score_frames(empty[None], apart[0][None], ("red", "square", "white"))[0]
    assert score.objects == 0 and not score.object_found and not score.right_object
    assert math.isnan(score.centroid_error) and math.isnan(score.area_error)


def test_each_inversion_strength_gets_its_own_interpolation_of_one_tuned_model():
    settings = shapes_interpolate.Settings(3, 3e-4, 4, 2.0, 0, (1.0, 0.5))
    nodes, saves = shapes_interpolate.clip_graph("clip.mp4", "a red square", 8, ["untuned", "tuned"], settings, 1)
    interpolations = {node_id: node["inputs"] for node_id, node in nodes.items()
                      if node["class_type"] == "TAV_InterpolateFrames"}
    assert sorted(inputs["inversion_strength"] for inputs in interpolations.values()) == [0.5, 0.5, 1.0, 1.0]
    tunes = [node_id for node_id, node in nodes.items() if node["class_type"] == "TAV_OneShotTune"]
    assert len(tunes) == 1 and [inputs["model"][0] for inputs in interpolations.values()].count(tunes[0]) == 2, \
        "both strengths of a variant share its one tuned model"
    for row, strength in (("untuned", 1.0), ("untuned@0.5", 0.5), ("tuned", 1.0), ("tuned@0.5", 0.5)):
        decode = nodes[saves[row]]["inputs"]["images"][0]
        interpolation = nodes[decode]["inputs"]["samples"][0]
        assert interpolations[interpolation]["inversion_strength"] == strength, row


def test_short_shapes_interpolate_case(tmp_path):
    out = tmp_path / "shapes_interpolate.md"
    variants = ["untuned", "tuned"]
    summary = shapes_interpolate.main(["--clips", "1", "--variants", ",".join(variants), "--tune-steps", "3",
                                       "--ddim-steps", "4", "--resample", "1", "--inversion-strengths", "1,0.5",
                                       "--out", str(out),
                                       "--workdir", str(tmp_path / "comfyui")])
    report = out.read_text()
    rows = [*shapes_interpolate.BASELINES, "untuned", "untuned@0.5", "tuned", "tuned@0.5"]
    assert all(f"| {row} |" in report for row in rows) and "Targets:" in report, report
    assert "resample 1," in report and "inversion_strength 1, 0.5," in report, "both settings reach the node"
    for row in ("tuned", "tuned@0.5"):
        assert f"- {row} in-betweens right object" in report and f"- {row} centroid error below blend's" in report
    sheet = cv2.imread(str(out.with_suffix(".png")))
    assert sheet.shape[0] == 28 + (1 + len(rows)) * 64  # source row + one row per baseline and variant
    assert sheet.shape[1] == 220 + 15 * 64  # label + 15 frames
    for row in rows:
        values = summary[row]
        for name in ("right_object", "object_found", "one_object", "two_or_more", "on_the_spot"):
            assert 0.0 <= values[name] <= 1.0, (row, values)
        assert values["keyframe_psnr"] > 10.0, (row, values)
        if values["object_found"] > 0:
            assert 0.0 <= values["centroid_error"] < 64 * math.sqrt(2) and values["area_error"] >= 0.0, (row, values)
    for baseline in shapes_interpolate.BASELINES:
        assert np.isfinite(summary[baseline]["centroid_error"]), summary[baseline]
    assert summary["repeat"]["right_object"] >= 6 / 7, "the demo VAE keeps the keyframes' object"
