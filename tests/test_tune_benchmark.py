"""benchmarks/tune_benchmark.py end to end on the CPU, as the GPU run uses it: on a bare host without PyAV.

The lent GPU machine's image has no PyAV, so ComfyUI's `nodes` module (comfy_api, video types) cannot be
imported there; the benchmark, and every part of the pack it drives, must not need it.
"""

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import torch
from comfyui_tune_a_video.comfy_glue.tuned_weights import tuned_q_keys
from comfyui_tune_a_video.comfy_glue.unet_inflation import inflate_model, inflation_of, temporal_layers_of
from comfyui_tune_a_video.tav_core.inflation_config import InflationConfig
from tav_dev.tiny_models import tiny_unet

REPO = Path(__file__).resolve().parents[1]


def benchmark_module():
    spec = importlib.util.spec_from_file_location("tune_benchmark", REPO / "benchmarks" / "tune_benchmark.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_flop_counter_counts_the_cpus_fused_attention():
    """The CPU runs SDPA as its own fused kernel, which torch's FLOP counter does not know: counted as the GPU's
    kernels are, 2 matrix products forward (scores, then values) and 5 backward (scores recomputed)."""
    videos, heads, queries, keys, dim = 2, 4, 64, 128, 16
    product = 2 * videos * heads * queries * keys * dim  # one (queries x dim) @ (dim x keys) per head, 2 FLOP each
    with torch.inference_mode(False):  # the suite runs under inference_mode, as ComfyUI runs nodes
        generator = torch.Generator().manual_seed(0)
        q = torch.randn(videos, heads, queries, dim, generator=generator, requires_grad=True)
        k, v = (torch.randn(videos, heads, keys, dim, generator=generator, requires_grad=True) for _ in range(2))
        flop_counter = benchmark_module().flop_counter
        with flop_counter() as counter:
            out = torch.nn.functional.scaled_dot_product_attention(q, k, v)
        assert counter.get_total_flops() == 2 * product
        with flop_counter() as counter:
            out.sum().backward()
        assert counter.get_total_flops() == 5 * product


def table_rows(output: str, first_cell: str) -> list[list[str]]:
    rows = [[cell.strip() for cell in line.split("|")] for line in output.splitlines() if "|" in line]
    return [row for row in rows if row[0] == first_cell]


def test_smoke_table_on_a_host_without_pyav(tmp_path):
    blocker = tmp_path / "av"
    blocker.mkdir()
    (blocker / "__init__.py").write_text("raise ImportError('PyAV is not installed on this image')\n")
    command = [
        sys.executable, str(REPO / "benchmarks" / "tune_benchmark.py"), "--frames", "2", "3", "--steps", "3",
        "--settings", "blocks", "off+channels_last", "--edit-steps", "2", "--repeats", "1",
        "--extrapolate-frames", "24",
    ]
    finished = subprocess.run(
        command, capture_output=True, text=True, timeout=600,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
    )
    assert finished.returncode == 0, finished.stderr[-3000:]
    output = finished.stdout
    assert "failed" not in output, finished.stderr[-3000:]
    measured = [line for line in output.splitlines() if line.startswith("measured ")]  # each as it finishes
    settings = ("blocks", "off+channels_last")
    assert [line.split(":")[0] for line in measured] == [
        f"measured {frames} frames at 64 px, {setting}" for frames in (2, 3) for setting in settings
    ]

    tune_rows = table_rows(output, "2")
    assert tuple(row[2] for row in tune_rows if len(row) > 10) == settings
    # The CPU's peak is counted tensor memory: at least the weights plus the trainable values' fp32 copies,
    # gradients and AdamW moments, which the profiler's allocator events must have seen being made.
    model = inflate_model(tiny_unet("sd1", seed=0), InflationConfig(), "Inflate UNet")
    temporal = temporal_layers_of(model)
    weight_bytes = sum(t.nbytes for t in model.model.state_dict().values()) + sum(
        t.nbytes for t in temporal.state_dict().values()
    )
    trainable = sum(model.get_model_object(key).numel() for key in tuned_q_keys(inflation_of(model))) + sum(
        p.numel() for p in temporal.parameters()
    )
    for row in tune_rows[:2]:
        median_step_s, tflop_per_step, peak_mb = float(row[3]), float(row[5]), float(row[8])
        assert median_step_s > 0 and tflop_per_step > 0
        assert peak_mb * 2**20 > weight_bytes + 16 * trainable
    results = {}
    for line in measured:
        frames, setting = int(line.split()[1]), line.split(", ")[1].split(":")[0]
        results[frames, setting] = result = json.loads(line.split(": ", 1)[1])
        assert result["rss_mb"] > 0 and result["forward_backward_peak_mb"] * 2**20 > weight_bytes + 16 * trainable
        assert result["peak_mb"] == max(result["forward_backward_peak_mb"], result["optimizer_step_peak_mb"])

    fits = [row for row in table_rows(output, "64") if len(row) == 5 and row[1] in settings]
    assert tuple(row[1] for row in fits) == settings
    for _, setting, fixed, per_frame, at_24 in fits:
        fixed, per_frame, at_24 = float(fixed), float(per_frame), float(at_24)
        for frames in (2, 3):  # two frame counts: the line passes through both forward/backward peaks
            assert abs(fixed + per_frame * frames - results[frames, setting]["forward_backward_peak_mb"]) < 1.5
        optimizer_step = max(results[frames, setting]["optimizer_step_peak_mb"] for frames in (2, 3))
        assert abs(max(fixed + 24 * per_frame, optimizer_step) - at_24) < 2  # the rounding of fixed and per frame
    assert float(fits[1][3]) > 0  # without checkpointing, every frame adds activations
    assert float(tune_rows[0][9]) == float(tune_rows[0][10]) == 1.0  # the first setting is the ratios' baseline
    speed_x, memory_x = float(tune_rows[1][9]), float(tune_rows[1][10])
    assert abs(speed_x - float(tune_rows[0][3]) / float(tune_rows[1][3])) < 0.02 * speed_x + 0.01
    assert abs(memory_x - float(tune_rows[1][8]) / float(tune_rows[0][8])) < 0.1 * memory_x
    assert re.search(r"blocks: [\d.]+ M trained parameters; tuned-weights file \(fp16", output)
    assert "motion-LoRA file" not in output

    edit_rows = [row for frames in ("2", "3") for row in table_rows(output, frames) if len(row) == 10]
    assert len(edit_rows) == 2
    for row, frames in zip(edit_rows, (2, 3), strict=True):
        result = results[frames, "blocks"]
        total_s = result["invert_s"] + result["sample_s"]
        assert result["invert_s"] > 0 and result["sample_s"] > 0 and result["edit_tflop"] > 0
        # ComfyUI batches cond and uncond together where memory allows (a tiny UNet: always).
        assert result["edit_unet_batch"] == 2 * frames
        assert row[2:] == [
            f"{result['invert_s']:.3f}", f"{result['sample_s']:.3f}", f"{total_s:.3f}",
            f"{1000 * total_s / (2 * 2 * frames):.2f}", f"{result['edit_tflop']:.3f}",
            f"{result['edit_tflop'] / total_s:.3f}", f"{result['edit_peak_mb']:.0f}", str(2 * frames),
        ]
        assert result["edit_peak_mb"] * 2**20 > weight_bytes
        # FLOPs in proportion to frames: per frame, 2 steps x (1 inversion + 2 cfg sampling) forwards, and the
        # sparse-causal keys are two frames whatever the length.
        assert abs(result["edit_tflop"] / frames - results[2, "blocks"]["edit_tflop"] / 2) < 0.05 * result["edit_tflop"]

    (edit_fit,) = [row for row in table_rows(output, "64") if len(row) == 5 and row[1] not in settings]
    fixed, per_batch_frame, together, apart = (float(cell) for cell in edit_fit[1:])
    points = [(results[frames, "blocks"]["edit_unet_batch"], results[frames, "blocks"]["edit_peak_mb"])
              for frames in (2, 3)]
    for batch, peak in points:  # two batches: the line passes through both peaks
        assert abs(fixed + per_batch_frame * batch - peak) < 1
    assert abs(fixed + 48 * per_batch_frame - together) < 3 and abs(fixed + 24 * per_batch_frame - apart) < 2
    # Inference (as ComfyUI's executor runs it, under inference_mode) keeps only the skip connections and one
    # layer's temporaries per batch frame; checkpointed tuning keeps every block's input and one block's
    # activations for backward: less per frame than even the blocks scope.
    assert per_batch_frame < float(fits[0][3])


def test_motion_module_rows_count_what_each_motion_training_keeps(tmp_path):
    """A seeded v2 module on SD1.5's levels (tiny width): full training keeps fp32 deltas, gradients and AdamW
    moments of every module weight, a rank-4 LoRA only its small factors; the LoRA's file size is reported."""
    command = [
        sys.executable, str(REPO / "benchmarks" / "tune_benchmark.py"), "--unet", "sd15_tiny", "--motion-module", "v2",
        "--frames", "2", "--steps", "2", "--edit-steps", "0", "--settings", "blocks+motion_lora", "blocks+motion_full",
    ]
    finished = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert finished.returncode == 0, finished.stderr[-3000:]
    results = {
        line.split(", ")[1].split(":")[0]: json.loads(line.split(": ", 1)[1])
        for line in finished.stdout.splitlines() if line.startswith("measured ")
    }
    lora, full = results["blocks+motion_lora"], results["blocks+motion_full"]
    assert lora["motion_lora_file_bytes"] > 0 and full["motion_lora_file_bytes"] is None
    assert full["weights_file_bytes"] > 2 * lora["weights_file_bytes"]  # every module weight's delta travels
    assert full["peak_mb"] > lora["peak_mb"]
    assert re.search(r"blocks\+motion_lora: [\d.]+ M trained parameters; tuned-weights file \(fp16", finished.stdout)
    assert "motion-LoRA file (fp16)" in finished.stdout


def test_rank_and_window_rows_count_what_they_train_and_hold():
    """+rank4+temporal_rank2 trains exactly the LoRA factors and the temporal vectors, in a smaller file and a
    smaller ComfyUI LoRA; +window2+clip_anchor on a 4-frame clip holds what a 2-frame clip holds (the clip
    anchor's extra forward keeps no activations), less than the whole 4-frame clip. --memory-only counts the same
    memory and files without timing, --time-only times the steps without counting."""
    command = [
        sys.executable, str(REPO / "benchmarks" / "tune_benchmark.py"), "--frames", "2", "4", "--steps", "2",
        "--edit-steps", "0", "--settings", "blocks", "blocks+rank4+temporal_rank2", "blocks+window2+clip_anchor",
    ]
    finished = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert finished.returncode == 0, finished.stderr[-3000:]
    results = measured_results(finished.stdout)
    whole, low_rank = results[2, "blocks"], results[2, "blocks+rank4+temporal_rank2"]
    model = inflate_model(tiny_unet("sd1", seed=0), InflationConfig(), "Inflate UNet")
    temporal = temporal_layers_of(model).state_dict()
    q_shapes = [model.get_model_object(key).shape for key in tuned_q_keys(inflation_of(model))]
    matrices = [value.shape for value in temporal.values() if value.ndim >= 2]
    vectors = sum(value.numel() for value in temporal.values() if value.ndim < 2)
    assert low_rank["trainable_params"] == sum(4 * sum(shape) for shape in q_shapes) + sum(
        2 * (shape[0] + shape[1:].numel()) for shape in matrices
    ) + vectors
    assert whole["trainable_params"] == sum(shape.numel() for shape in q_shapes) + sum(
        value.numel() for value in temporal.values()
    )
    assert low_rank["weights_file_bytes"] < whole["weights_file_bytes"] / 2
    assert low_rank["comfy_lora_file_bytes"] < whole["comfy_lora_file_bytes"] / 2
    assert low_rank["temporal_file_bytes"] < whole["temporal_file_bytes"] / 2
    windowed, two_frames = results[4, "blocks+window2+clip_anchor"], results[2, "blocks"]
    assert abs(windowed["forward_backward_peak_mb"] / two_frames["forward_backward_peak_mb"] - 1) < 0.05
    assert windowed["forward_backward_peak_mb"] < results[4, "blocks"]["forward_backward_peak_mb"]
    assert "as_comfy_lora: ComfyUI LoRA" in finished.stdout

    memory_only = subprocess.run([*command[:2], "--frames", "4", "--edit-steps", "0", "--memory-only", "--settings",
                                  "blocks+window2+clip_anchor"], capture_output=True, text=True, timeout=600)
    assert memory_only.returncode == 0, memory_only.stderr[-3000:]
    counted = measured_results(memory_only.stdout)[4, "blocks+window2+clip_anchor"]
    for figure in ("peak_mb", "forward_backward_peak_mb", "optimizer_step_peak_mb"):
        assert abs(counted[figure] / windowed[figure] - 1) < 1e-3, figure
    assert (counted["weights_file_bytes"], counted["trainable_params"]) == (
        windowed["weights_file_bytes"], windowed["trainable_params"])
    assert counted["median_step_s"] != counted["median_step_s"]  # nan: no step was timed

    time_only = subprocess.run([*command[:2], "--frames", "2", "--steps", "3", "--edit-steps", "0", "--time-only",
                                "--settings", "blocks"], capture_output=True, text=True, timeout=600)
    assert time_only.returncode == 0, time_only.stderr[-3000:]
    timed = measured_results(time_only.stdout)[2, "blocks"]
    assert timed["median_step_s"] > 0 and (timed["weights_file_bytes"], timed["trainable_params"]) == (
        whole["weights_file_bytes"], whole["trainable_params"])
    assert timed["peak_mb"] != timed["peak_mb"] and timed["step_tflop"] != timed["step_tflop"]  # nan: not counted


def measured_results(output: str) -> dict:
    """Each "measured" line's result, by (frames, setting)."""
    return {
        (int(line.split()[1]), line.split(", ")[1].split(":")[0]): json.loads(line.split(": ", 1)[1])
        for line in output.splitlines() if line.startswith("measured ")
    }
