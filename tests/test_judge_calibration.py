"""benchmarks/judge_calibration.py measures the shapes-world judge on its own: the box fill it tells shapes by, the
kinds of miss it sorts wrong frames into, and its tables, each checked on frames of known truth."""

import importlib.util
import math

import numpy as np
from comfyui_tune_a_video.shapes_demo.judge import classify_shape, judge
from comfyui_tune_a_video.shapes_demo.world import BACKGROUNDS, SHAPES, Scene, render
from tav_dev.comfy_host import REPO

_spec = importlib.util.spec_from_file_location("judge_calibration", REPO / "benchmarks" / "judge_calibration.py")
calibration = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(calibration)

RED_SQUARE = ("red", "square", "white")


def centred(shape: str, colour: str = "red") -> np.ndarray:
    return render(Scene("white", colour, shape, 32.0, 32.0, 12.0))


def with_soft_corners(frame: np.ndarray, cut: int) -> np.ndarray:
    """The object's bounding-box corners painted over with background, `cut` px along each edge."""
    background = np.array(BACKGROUNDS["white"], np.uint8)
    ys, xs = np.nonzero((frame != background).any(axis=-1))
    softened = frame.copy()
    for y0, dy in ((ys.min(), 1), (ys.max(), -1)):
        for x0, dx in ((xs.min(), 1), (xs.max(), -1)):
            for i in range(cut):
                for j in range(cut - i):
                    softened[y0 + dy * i, x0 + dx * j] = background
    return softened


def test_the_box_fill_is_what_tells_the_shapes_apart():
    fills = {shape: judge(centred(shape)).box_fill for shape in SHAPES}
    assert fills["square"] > 0.95 and 0.7 < fills["circle"] < 0.82 and 0.45 < fills["triangle"] < 0.6, fills
    assert all(classify_shape(fill) == shape for shape, fill in fills.items())


def test_wrong_frames_are_sorted_by_what_is_wrong_with_their_fills():
    soft_square = with_soft_corners(centred("square"), 6)
    soft_verdict = judge(soft_square)
    assert soft_verdict.colour == "red" and soft_verdict.shape == "circle" and soft_verdict.box_fill < 0.88
    frames = np.stack([
        soft_square, centred("square"), centred("square", "blue"), centred("circle", "blue"),
        np.full_like(soft_square, BACKGROUNDS["white"]),
    ])
    misses = calibration.tally_misses(frames, [RED_SQUARE] * len(frames))
    assert list(misses) == ["square read as circle", "wrong colour", "wrong colour and shape", "no object"]
    assert misses["square read as circle"] == [soft_verdict.box_fill]
    assert misses["wrong colour"] == [judge(frames[2]).box_fill]
    assert len(misses["no object"]) == 1 and math.isnan(misses["no object"][0])
    lines = calibration.misses_table(misses, len(frames))
    assert lines[0] == "1 of 5 frames right (0.200)."
    assert f"| square read as circle | 1 | {soft_verdict.box_fill:.2f} / " in "\n".join(lines)


def test_the_calibration_reads_the_worlds_rendered_frames_all_right_and_writes_its_tables(tmp_path):
    out = tmp_path / "judge.md"
    result = calibration.main(["--scenes", "24", "--out", str(out)])
    assert set(result) == set(calibration.FRAME_SOURCES)
    for source in calibration.FRAME_SOURCES:
        assert sum(reading.frames for reading in result[source].values()) == 24
    rendered = result["rendered"]
    assert all(r.right_object == r.frames == r.read_as[shape] for shape, r in rendered.items()), rendered
    report = out.read_text()
    assert "### through the demo VAE" in report and "| true shape | frames | right object |" in report
    square = result["through the demo VAE"]["square"]
    assert f"| square | {square.frames} | {square.right_object / square.frames:.3f} |" in report
