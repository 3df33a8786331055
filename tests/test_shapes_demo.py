"""The README's demo command and one short case of the shapes-world edit benchmark, end to end on a real
headless ComfyUI with the embedded demo model (the full benchmark stays a benchmark)."""

import importlib.util
import subprocess
import sys

import cv2
import numpy as np
import pytest
from comfyui_tune_a_video.shapes_demo.world import random_clip
from tav_dev.comfy_host import REPO
from tav_dev.shapes_clips import CLIPS_FOLDER, COMMITTED, committed_captions, read_mp4

_spec = importlib.util.spec_from_file_location("shapes_edit", REPO / "benchmarks" / "shapes_edit.py")
shapes_edit = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(shapes_edit)


@pytest.mark.parametrize("name", sorted(COMMITTED))
def test_committed_clips_are_their_seeds(name):
    info = committed_captions()[name]
    clip = random_clip(info["seed"], frames=info["frames"], path=info["path"])
    assert info["caption"] == clip.caption
    assert np.array_equal(read_mp4(CLIPS_FOLDER / name), clip.frames), "lossless clip differs from its seed"


def test_demo_command_edits_the_bundled_clip(tmp_path):
    run = subprocess.run([sys.executable, str(REPO / "tools" / "run_demo.py"), "--output", str(tmp_path)],
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert list((tmp_path / "comfyui" / "output" / "tuneavideo").glob("demo_edit_*.mp4"))
    sheet = cv2.imread(str(tmp_path / "demo_side_by_side.png"))
    assert sheet is not None and sheet.shape[0] == 28 + 2 * 128
    alignment = float(run.stdout.split("text alignment")[1].split()[0])
    motion = float(run.stdout.split("motion error")[1].split()[0])
    assert alignment >= 0.75 and motion <= 3.0, run.stdout


def test_short_benchmark_case(tmp_path):
    out = tmp_path / "shapes_edit.md"
    summary = shapes_edit.main(["--clips", "1", "--edits", "shape", "--variants", "full,per_frame_t2i",
                                "--tune-steps", "10", "--ddim-steps", "5", "--out", str(out),
                                "--workdir", str(tmp_path / "comfyui")])
    report = out.read_text()
    assert "| full |" in report and "| per_frame_t2i |" in report
    sheet = cv2.imread(str(out.with_suffix(".png")))
    assert sheet.shape[0] == 28 + 3 * 64  # source row + one row per variant
    full, per_frame = summary["full"], summary["per_frame_t2i"]
    assert full["recon_psnr"] >= 18.0
    assert full["text_alignment"] >= 0.75
    assert per_frame["motion_error"] >= 3 * full["motion_error"], summary
