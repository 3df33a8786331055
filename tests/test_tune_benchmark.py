"""benchmarks/tune_benchmark.py end to end on the CPU, as the GPU run uses it: on a bare host without PyAV.

The lent GPU machine's image has no PyAV, so ComfyUI's `nodes` module (comfy_api, video types) cannot be
imported there; the benchmark, and every part of the pack it drives, must not need it.
"""

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def table_rows(output: str, first_cell: str) -> list[list[str]]:
    rows = [[cell.strip() for cell in line.split("|")] for line in output.splitlines() if "|" in line]
    return [row for row in rows if row[0] == first_cell]


def test_smoke_table_on_a_host_without_pyav(tmp_path):
    blocker = tmp_path / "av"
    blocker.mkdir()
    (blocker / "__init__.py").write_text("raise ImportError('PyAV is not installed on this image')\n")
    command = [
        sys.executable, str(REPO / "benchmarks" / "tune_benchmark.py"), "--frames", "2", "--steps", "3",
        "--settings", "blocks", "off+channels_last", "--edit-steps", "2", "--repeats", "1",
    ]
    finished = subprocess.run(
        command, capture_output=True, text=True, timeout=600,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
    )
    assert finished.returncode == 0, finished.stderr[-3000:]
    output = finished.stdout
    assert "failed" not in output, finished.stderr[-3000:]
    assert sum(line.startswith("measured 2 frames at 64 px") for line in output.splitlines()) == 2  # as they finish

    tune_rows = table_rows(output, "2")
    settings = [row[2] for row in tune_rows if len(row) > 10]
    assert settings == ["blocks", "off+channels_last"]
    for row in tune_rows[:2]:
        median_step_s, tflop_per_step, peak_mb = float(row[3]), float(row[5]), float(row[9])
        assert median_step_s > 0 and tflop_per_step > 0 and peak_mb > 0
    assert float(tune_rows[0][10]) == 1.0  # the first setting is the ratios' baseline
    assert "Tuned-weights file (fp16" in output

    edit_row = next(row for row in tune_rows if len(row) == 6)
    invert_s, sample_s, total_s = (float(cell) for cell in edit_row[2:5])
    assert invert_s > 0 and sample_s > 0 and abs(total_s - invert_s - sample_s) < 2e-3
