"""One-Shot Tune, DDIM inversion and TAV Sample speed and memory, as tables (medians; never a timed test).

    .venv/bin/python benchmarks/tune_benchmark.py                       # CPU smoke run, tiny UNet
    .venv/bin/python benchmarks/tune_benchmark.py --unet sd15 --frames 24 --size 512 --steps 30 \
        --edit-steps 50 --gpu --settings blocks transformers off blocks+compile
    .venv/bin/python benchmarks/tune_benchmark.py --unet sd15_mini --reference    # side by side, CPU
    .venv/bin/python benchmarks/tune_benchmark.py --unet sd15 --weights fp16 --frames 4 6 8 --size 512 \
        --steps 1 --edit-steps 0 --settings blocks+bf16      # a GPU's tensor memory, counted on the CPU
    .venv/bin/python benchmarks/tune_benchmark.py --unet sd15 --weights fp16 --frames 96 --size 512 \
        --edit-steps 0 --memory-only --settings blocks+bf16+window24   # the counted tune alone, no timing
    .venv/bin/python benchmarks/tune_benchmark.py --unet sd15 --weights fp16 --frames 24 --size 512 --steps 3 \
        --edit-steps 0 --time-only --settings blocks+bf16 blocks+bf16+pseudo3d   # the timed tune alone, no counting
    .venv/bin/python benchmarks/tune_benchmark.py --unet sd15 --weights fp16 --motion-module v2 --frames 4 6 \
        --size 512 --steps 1 --edit-steps 0 --extrapolate-frames 16 \
        --settings blocks+bf16+motion_lora blocks+bf16+motion_full   # with an AnimateDiff v2-shaped module

--settings names the tuning settings to measure, one row each: a gradient checkpointing scope (blocks,
transformers, off), optionally followed by +compile (regional torch.compile), +channels_last, +fp32,
+fp16 or +bf16 (precision; default auto: bf16 on a GPU, fp32 on the CPU), +sync (read the loss back every
step instead of every GPU_REPORT_EVERY), +naive_attention (ComfyUI's unfused attention instead of its
optimised one) or +pseudo3d (Inflate UNet's temporal_conv pseudo3d: Make-A-Video's temporal convolutions,
trained beside the rest), and numbered ones: +rank<N> (One-Shot Tune's rank: to_q LoRAs), +temporal_rank<N> (the
temporal layers' matrices as LoRAs), +window<N> (each step trains on N consecutive frames of the clip, anchored on
the window's first frame; with +clip_anchor on the clip's frame 0: window_anchor clip). The first setting is the
baseline of the ratio columns. Below the table, per setting: trained values, the tuned-weights file's size (fp16)
and, saved with as_comfy_lora, the ComfyUI LoRA's and the pack file's.

--motion-module v2 (or v3, v1) injects a seeded motion module of AnimateDiff's layout for that UNet (written to
a temporary file and read by the pack's loader), inflated the AnimateDiff way (per-frame attention, no temporal
layers); +motion_lora (rank 32, the default), +motion_full or +motion_frozen choose One-Shot Tune's
motion_training. The tables then also give the motion-LoRA file's size.

--reference also times the public reference implementation (benchmarks/reference_worker.py, in the
environment scripts/reference_env.sh builds) on the same architecture and sizes, and prints the ratio.

Each configuration runs in its own process so its peak memory belongs to it alone. "peak MB" is tensor
memory: torch.cuda.max_memory_allocated on a GPU (the "measured" line adds max_memory_reserved, what the
card must have); on the CPU, which has no such counter (and whose RSS counts the interpreter, libraries
and freed-but-kept pages too), the same quantity counted: the tensors that exist before tuning (the UNet's
weights) plus the peak of torch's allocations during an extra eager 2-step tune, read from the profiler's
allocator events. So with --weights fp16 and +bf16 the CPU counts what a GPU would hold, up to
cuDNN/cuBLAS workspaces and allocator rounding. At one size tensor memory grows linearly with frames
(every saved activation is per frame; sparse-causal keys are two frames whatever the length; fused
attention keeps no score matrix), so with two or more --frames the script fits fixed + per frame to the
forward/backward peaks and reports the peak at --extrapolate-frames (or the optimiser step's, which does
not grow with frames, where that is higher). The edit table (DDIM Invert Video + TAV Sample on the tuned
model, run under torch.inference_mode as ComfyUI's executor runs every node) has the same peak MB, and its
FLOPs. On the CPU every attention is SDPA, as on a GPU (ComfyUI's CPU default chunks by free memory).

Step times come from One-Shot Tune's progress reports, which come after the loss read-back (a device
sync), so they are wall-clock times of whole optimiser steps.
"setup s" is everything before the steady state: moving the model to the device, the first steps'
warm-up and, with +compile, compilation (FLOPs are counted on one extra eager step before it).
"syncs/step" (GPU) counts the times PyTorch made the host wait for the GPU during the steady state; the
loss read-back every GPU_REPORT_EVERY steps is the only one meant to be there (0.10 per step).
"""

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from contextlib import contextmanager, nullcontext
from functools import partial
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GPU_BF16_TFLOPS = 800  # dense bf16 matrix products on the lent H100 (KINDS.md: 769-798 measured)
SCOPES = ("blocks", "transformers", "off")
TINY_KINDS = {"tiny": "sd1", "sd15_tiny": "sd15"}  # tiny_unet kinds (sd15_tiny: SD1.5's levels, where modules fit)
MOTION_TRAINING = {"motion_lora": "lora", "motion_full": "full", "motion_frozen": "frozen"}
MODIFIERS = ("compile", "channels_last", "fp32", "fp16", "bf16", "sync", "naive_attention", "pseudo3d",
             "clip_anchor", *MOTION_TRAINING)
NUMBERED_MODIFIERS = re.compile(r"(rank|temporal_rank|window)([1-9]\d*)")  # rank8 -> TuneSettings.rank = 8


def table_line(cells, wide: int | None = None) -> str:
    """Cells right-aligned in 13 characters; column `wide` (the setting names) in 24."""
    return " | ".join(f"{cell:>{24 if index == wide else 13}}" for index, cell in enumerate(cells))


def parse_setting(name: str) -> tuple[str, set[str]]:
    """"blocks+compile" -> ("blocks", {"compile"}), with a clear error for anything else."""
    scope, *modifiers = name.split("+")
    unknown = [m for m in modifiers if m not in MODIFIERS and not NUMBERED_MODIFIERS.fullmatch(m)]
    if scope not in SCOPES or unknown:
        raise argparse.ArgumentTypeError(
            f"{name!r}: a scope {SCOPES} then any of +{' +'.join(MODIFIERS)} +rank<N> +temporal_rank<N> +window<N>"
        )
    return scope, set(modifiers)


def numbered(modifiers: set[str]) -> dict[str, int]:
    """The numbered modifiers as TuneSettings fields: {"rank8", "window24"} -> {"rank": 8, "window": 24}."""
    found = (NUMBERED_MODIFIERS.fullmatch(modifier) for modifier in modifiers)
    return {match[1]: int(match[2]) for match in found if match}


def worker(args: argparse.Namespace) -> dict:
    from tav_dev.comfy_host import setup_host

    setup_host(cpu=not args.gpu, nodes=False)
    import comfy.ldm.modules.attention as comfy_attention
    import comfy.model_management
    import comfy.utils
    import torch
    from comfyui_tune_a_video.comfy_glue import one_shot_tune
    from comfyui_tune_a_video.comfy_glue.unet_inflation import inflate_model
    from comfyui_tune_a_video.tav_core.inflation_config import AttentionMode, InflationConfig, TemporalConvMode
    from comfyui_tune_a_video.tav_core.tuning import (
        CheckpointScope,
        MotionTraining,
        PrecisionChoice,
        TuneSettings,
        WindowAnchor,
    )
    from tav_dev.tiny_models import CONTEXT_DIM, full_unet, tiny_unet
    from torch._dynamo.utils import counters as compile_counters

    scope, modifiers = parse_setting(args.setting)
    if "sync" in modifiers:
        one_shot_tune.GPU_REPORT_EVERY = 1
    if "naive_attention" in modifiers:
        comfy_attention.optimized_attention = comfy_attention.attention_basic
    elif not args.gpu:  # SDPA, as on a GPU: ComfyUI's CPU default (sub-quadratic) chunks by the free memory
        comfy_attention.optimized_attention = comfy_attention.attention_pytorch
    precision = next((m for m in ("fp32", "fp16", "bf16") if m in modifiers), "auto")
    weights_dtype = {"fp16": torch.float16, "fp32": torch.float32}.get(
        args.weights, torch.float16 if args.gpu else torch.float32
    )

    started = time.perf_counter()
    if args.unet in TINY_KINDS:
        base = tiny_unet(TINY_KINDS[args.unet], seed=0, dtype=weights_dtype)
    else:
        base = full_unet(args.unet, seed=0, dtype=weights_dtype)
    context_dim = {"sd15_mini": 64, "sd15": 768, "sdxl": 2048}.get(args.unet, CONTEXT_DIM)
    temporal_conv = TemporalConvMode.PSEUDO3D if "pseudo3d" in modifiers else TemporalConvMode.NONE
    if args.motion_module == "none":
        model = inflate_model(base, InflationConfig(temporal_conv=temporal_conv), "Inflate UNet")
    else:
        motion = seeded_motion_module_file(base, args.motion_module, weights_dtype)
        config = InflationConfig(attention=AttentionMode.PER_FRAME, temporal_layers=False, temporal_conv=temporal_conv)
        model = inflate_model(base, config, "Inflate UNet", motion)
    build_s = time.perf_counter() - started

    generator = torch.Generator().manual_seed(0)
    latent = {"samples": torch.randn(args.frames, 4, args.size // 8, args.size // 8, generator=generator)}
    extras = {"pooled_output": torch.randn(1, 1280, generator=generator)} if args.unet == "sdxl" else {}
    conditioning = [[torch.randn(1, 77, context_dim, generator=generator), extras]]

    stamps: list[float] = []

    class StampedProgress(one_shot_tune.NodeProgress):
        """Times each progress report (ComfyUI's own progress hook is throttled in newer versions)."""

        def update(self, done: int, text: str | None = None, preview: tuple | None = None) -> None:
            stamps.append(time.perf_counter())
            super().update(done, text, preview)

    one_shot_tune.NodeProgress = StampedProgress
    device = comfy.model_management.get_torch_device()
    settings = TuneSettings(
        steps=args.steps, learning_rate=3e-5, seed=0, gradient_checkpointing=CheckpointScope(scope),
        precision=PrecisionChoice(precision), compile="compile" in modifiers,
        channels_last="channels_last" in modifiers,
        motion_training=MotionTraining(next((MOTION_TRAINING[m] for m in modifiers if m in MOTION_TRAINING), "lora")),
        **numbered(modifiers),
        **({"window_anchor": WindowAnchor.CLIP} if "clip_anchor" in modifiers else {}),
    )
    # Every node runs under torch.inference_mode in ComfyUI's executor (One-Shot Tune leaves it for training);
    # outside it sampling would record autograd graphs through the trainable temporal layers.
    with torch.inference_mode():
        if args.memory_only:
            return memory_only(model, latent, conditioning, settings, build_s)
        step_flops = float("nan") if args.time_only else count_step_flops(model, latent, conditioning, settings)
        comfy.model_management.soft_empty_cache()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        stamps.clear()
        sync_times: list[float] = []
        tune_started = time.perf_counter()
        with counting_host_syncs(sync_times) if device.type == "cuda" else nullcontext():
            result = one_shot_tune.tune(model, latent, conditioning, settings, "One-Shot Tune")
        per_report = 1 if device.type == "cpu" else one_shot_tune.GPU_REPORT_EVERY
        steady_steps = args.steps - per_report
        # The first interval includes moving the model, warm-up and compilation: the steady state starts after it.
        step_times = [(b - a) / per_report for a, b in zip(stamps[1:], stamps[2:], strict=False)]
        median_step_s = statistics.median(step_times) if step_times else float("nan")
        memory = {
            # Allocated is what the tensors need; reserved adds the caching allocator's slack (what a card must have).
            "peak_mb": torch.cuda.max_memory_allocated() / 2**20,
            "reserved_mb": torch.cuda.max_memory_reserved() / 2**20,
        } if device.type == "cuda" else {
            # The process's peak so far (comparable with the reference's), then the counted run (profiled, so later).
            "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            **({"peak_mb": float("nan")} if args.time_only
               else count_tensor_peak(model, latent, conditioning, settings)[0]),
        }
        edit = measure_edit(result.model, latent, conditioning, args.edit_steps, args.repeats) \
            if args.edit_steps else {}
    return {
        **edit,
        "build_s": build_s,
        "setup_s": (stamps[0] - tune_started) - per_report * median_step_s,
        "median_step_s": median_step_s,
        "syncs_per_step": sum(t > stamps[0] for t in sync_times) / steady_steps if device.type == "cuda" else None,
        "step_tflop": step_flops / 1e12,
        **memory,
        **weights_figures(result.weights),
        "device": str(device),
        **({"compiled_graphs": compile_counters["stats"]["unique_graphs"],
            "graph_breaks": sum(compile_counters["graph_break"].values())} if "compile" in modifiers else {}),
    }


def memory_only(model, latent: dict, conditioning: list, settings, build_s: float) -> dict:
    """--memory-only: the counted 2-step tune alone (no FLOP-counting step, no timed tune), for sizes where
    every step is many minutes on the CPU; the times and FLOPs are left unmeasured (nan)."""
    peaks, result = count_tensor_peak(model, latent, conditioning, settings)
    nan = float("nan")
    return {"build_s": build_s, "setup_s": nan, "median_step_s": nan, "syncs_per_step": None, "step_tflop": nan,
            "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, **peaks,
            **weights_figures(result.weights), "device": "cpu"}


def weights_figures(weights) -> dict:
    """Trained values and the sizes of the files the tuned weights make."""
    return {
        "weights_file_bytes": weights_file_bytes(weights),
        **dict(zip(("comfy_lora_file_bytes", "temporal_file_bytes"), comfy_lora_file_bytes(weights), strict=True)),
        "trainable_params": trainable_parameters(weights),
        "motion_lora_file_bytes": motion_lora_file_bytes(weights),
    }


@contextmanager
def counting_host_syncs(times: list[float]):
    """Record when PyTorch makes the host wait for the GPU (CUDA sync debug mode), to count them per step."""
    import torch

    def record(message, *args, **kwargs) -> None:
        if "synchroniz" in str(message):
            times.append(time.perf_counter())

    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.showwarning = record
            yield
    finally:
        torch.cuda.set_sync_debug_mode("default")


def seeded_motion_module_file(base, version: str, dtype):
    """A seeded motion module of AnimateDiff's layout for `base`, through the pack's own file loader."""
    from comfyui_tune_a_video.comfy_glue.motion_loading import load_motion_module
    from comfyui_tune_a_video.tav_core.weights_file import save_atomically
    from tav_dev.motion_module_files import seeded_motion_module

    state = seeded_motion_module(base.model.diffusion_model, version, seed=0)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"mm_{version}.safetensors"
        save_atomically(path, {key: value.to(dtype) for key, value in state.items()}, {})
        return load_motion_module(path, path.name)


def motion_lora_file_bytes(weights) -> int | None:
    """Size of the motion-LoRA file TAV Save Tuned Weights writes (fp16), or None without a motion LoRA."""
    import torch
    from comfyui_tune_a_video.tav_core.tuned_weights_file import motion_lora_file_contents
    from comfyui_tune_a_video.tav_core.weights_file import save_atomically

    if not weights.motion_lora:
        return None
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "motion_lora.safetensors"
        save_atomically(path, *motion_lora_file_contents(weights, torch.float16))
        return path.stat().st_size


def trainable_parameters(weights) -> int:
    """What One-Shot Tune trained: every element of the tuned weights (deltas, temporal layers, LoRA factors)."""
    tensors = [*weights.q_deltas.values(), *weights.temporal.values(), *weights.motion_deltas.values()]
    loras = [*weights.motion_lora.values(), *weights.q_lora.values(), *weights.temporal_lora.values()]
    tensors += [factor for lora in loras for factor in (lora.down, lora.up)]
    return sum(tensor.numel() for tensor in tensors)


def saved_bytes(contents: tuple) -> int:
    """Size of a safetensors file of these (tensors, metadata), written as the pack writes its files."""
    from comfyui_tune_a_video.tav_core.weights_file import save_atomically

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "tuned.safetensors"
        save_atomically(path, *contents)
        return path.stat().st_size


def weights_file_bytes(weights) -> int:
    """Size of the tuned-weights file as TAV Save Tuned Weights writes it by default (fp16)."""
    import torch
    from comfyui_tune_a_video.tav_core.tuned_weights_file import to_file_contents

    return saved_bytes(to_file_contents(weights, torch.float16))


def comfy_lora_file_bytes(weights) -> tuple[int, int]:
    """Sizes of the two files TAV Save Tuned Weights writes with as_comfy_lora (fp16): the ComfyUI LoRA (the to_q
    part) and the pack's file with the rest."""
    import torch
    from comfyui_tune_a_video.tav_core.tuned_weights_file import (
        comfy_lora_contents,
        to_file_contents,
        without_spatial_part,
    )

    rest = without_spatial_part(weights, "tuned.safetensors")
    return saved_bytes(comfy_lora_contents(weights, torch.float16)), saved_bytes(to_file_contents(rest, torch.float16))


def flop_counter():
    """torch's FLOP counter, taught the CPU's fused attention kernels: it knows the GPU's flash, efficient and
    cuDNN SDPA but not the CPU's, whose attention it would count as zero."""
    import torch
    from torch.utils import flop_counter

    def forward(query, key, value, *args, out_shape=None, **kwargs) -> int:  # the GPU kernels' formulas
        return flop_counter.sdpa_flop_count(query, key, value)

    def backward(grad_out, query, key, value, *args, out_shape=None, **kwargs) -> int:
        return flop_counter.sdpa_backward_flop_count(grad_out, query, key, value)

    cpu_attention = {
        torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: forward,
        torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward: backward,
    }
    return flop_counter.FlopCounterMode(display=False, custom_mapping=cpu_attention)


def count_step_flops(model, latent: dict, conditioning: list, settings) -> float:
    """FLOPs of one optimiser step (forward, backward and any recomputation), counted by torch on one extra
    eager step before the timed run (a compiled step does the same arithmetic)."""
    from dataclasses import replace

    from comfyui_tune_a_video.comfy_glue.one_shot_tune import tune

    with flop_counter() as counter:
        tune(model, latent, conditioning, replace(settings, steps=1, compile=False), "One-Shot Tune")
    return float(counter.get_total_flops())


def existing_tensors(model, latent: dict, conditioning: list) -> list:
    """The tensors a run starts with: the model's and its added models' weights, the latent, the conditioning."""
    tensors = [latent["samples"], *(c[0] for c in conditioning)]
    for patcher in (model, *model.get_nested_additional_models()):
        tensors += patcher.model.state_dict().values()
    return tensors


@contextmanager
def counted_allocations(existing: list):
    """Peak tensor memory (MB) of the block's work on the CPU: what max_memory_allocated reads on a GPU.

    The tensors that exist before (each storage once) plus the highest running sum of torch's allocations and
    frees in the block, from the profiler's allocator events; filled in on exit as "optimizer_step" (inside
    optimiser steps) and "outside_optimizer" (the rest: forward and backward, or inference). Only the latter
    grows with frames, and the CPU's multi-tensor AdamW needs more temporaries than the fused one a GPU runs.
    """
    from torch.profiler import ProfilerActivity, profile

    existing_bytes = sum({t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in existing}.values())
    peaks: dict[str, float] = {}
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as profiler:
        yield peaks
    events = profiler.profiler.kineto_results.events()
    optimizer_steps = [(e.start_ns(), e.end_ns()) for e in events if e.name().startswith("Optimizer.step#")]
    changes = sorted((e.start_ns(), e.nbytes()) for e in events if e.name() == "[memory]")
    running, highest = 0, {"optimizer_step": 0, "outside_optimizer": 0}
    for when, change in changes:
        running += change
        phase = "optimizer_step" if any(start <= when <= end for start, end in optimizer_steps) else "outside_optimizer"
        highest[phase] = max(highest[phase], running)
    peaks.update({phase: (existing_bytes + value) / 2**20 for phase, value in highest.items()})


def count_tensor_peak(model, latent: dict, conditioning: list, settings) -> tuple[dict, object]:
    """Counted peak tensor memory (MB) of an eager 2-step tune on the CPU (the optimiser's state exists from
    the first step on), overall, in forward/backward and in the optimiser's steps; and that tune's result."""
    from dataclasses import replace

    from comfyui_tune_a_video.comfy_glue.one_shot_tune import tune

    with counted_allocations(existing_tensors(model, latent, conditioning)) as peaks:
        result = tune(model, latent, conditioning, replace(settings, steps=2, compile=False), "One-Shot Tune")
    return {"peak_mb": max(peaks.values()), "forward_backward_peak_mb": peaks["outside_optimizer"],
            "optimizer_step_peak_mb": peaks["optimizer_step"]}, result


def measure_edit(model, latent: dict, conditioning: list, steps: int, repeats: int) -> dict:
    """DDIM Invert Video and TAV Sample (cfg on), each `steps` steps, on the tuned model: median wall times,
    FLOPs (one step of each counted, times steps: every DDIM step is one model call) and peak tensor memory
    (max_memory_allocated over the timed rounds on a GPU; counted on the one-step round on the CPU)."""
    import comfy.model_management
    import torch
    from comfyui_tune_a_video.comfy_glue.ddim_editing import invert_video, sample_video

    def timed(run) -> tuple[float, dict]:
        comfy.model_management.soft_empty_cache()
        started = time.perf_counter()
        result = run()
        float(result["samples"].float().sum())  # wait for the device
        return time.perf_counter() - started, result

    def edit_round(steps: int) -> tuple[float, float]:
        invert_s, inverted = timed(partial(invert_video, model, latent, conditioning, steps, 1.0, "benchmark"))
        sample_s, _ = timed(
            partial(sample_video, model, conditioning, conditioning, inverted, steps, 7.5, 0.0, 0, "benchmark")
        )
        return invert_s, sample_s

    on_gpu = comfy.model_management.get_torch_device().type == "cuda"
    counting = nullcontext({}) if on_gpu else counted_allocations(existing_tensors(model, latent, conditioning))
    with unet_batches(model) as counted_batches, flop_counter() as flops, counting as peaks:
        edit_round(1)
    if on_gpu:
        torch.cuda.reset_peak_memory_stats()
    with unet_batches(model) as timed_batches:
        invert_s, sample_s = zip(*(edit_round(steps) for _ in range(repeats + 1)), strict=True)  # 1st warms up
    return {
        "invert_s": statistics.median(invert_s[1:]), "sample_s": statistics.median(sample_s[1:]),
        "edit_tflop": steps * flops.get_total_flops() / 1e12,
        # The peak comes from the timed rounds on a GPU and from the counted round on the CPU: their batch.
        "edit_peak_mb": torch.cuda.max_memory_allocated() / 2**20 if on_gpu else peaks["outside_optimizer"],
        "edit_unet_batch": max(timed_batches if on_gpu else counted_batches),
    }


@contextmanager
def unet_batches(model):
    """The batch of every UNet call in the block: ComfyUI decides by the free memory whether cond and uncond
    go in one batch (twice the frames) or one after the other, and the edit's peak memory follows."""
    batches: list[int] = []
    hook = model.model.diffusion_model.register_forward_pre_hook(lambda module, args: batches.append(args[0].shape[0]))
    try:
        yield batches
    finally:
        hook.remove()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--unet", choices=[*TINY_KINDS, "sd15_mini", "sd15", "sdxl"], default="tiny")
    parser.add_argument("--motion-module", choices=["none", "v1", "v2", "v3"], default="none",
                        help="inject a seeded AnimateDiff motion module of this version (SD1.5-shaped UNets)")
    parser.add_argument("--frames", type=int, nargs="+", default=[8])
    parser.add_argument("--size", type=int, nargs="+", default=[64], help="pixel resolution (latent = size / 8)")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--settings", nargs="+", default=["blocks", "off"],
                        help="tuning settings, one row each (see above); the first is the ratios' baseline")
    parser.add_argument("--edit-steps", type=int, default=10, help="DDIM steps for inversion and sampling (0: skip)")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds of inversion + sampling")
    parser.add_argument("--gpu", action="store_true")
    parser.add_argument("--weights", choices=["auto", "fp16", "fp32"], default="auto",
                        help="UNet weight dtype (auto: fp16 on a GPU, as ComfyUI loads SD1.5 there; fp32 on the CPU)")
    parser.add_argument("--extrapolate-frames", type=int, default=24,
                        help="with two or more --frames: the fitted peak tensor memory at this many frames")
    parser.add_argument("--reference", action="store_true",
                        help="also time the reference implementation (needs scripts/reference_env.sh first)")
    parser.add_argument("--memory-only", action="store_true",
                        help="CPU: count the peak tensor memory only (no timed steps, no FLOP count)")
    parser.add_argument("--time-only", action="store_true",
                        help="CPU: the timed tune alone (no FLOP count, no counted memory), for sizes where every "
                        "step is many minutes")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--setting", default="blocks", help=argparse.SUPPRESS)
    args = parser.parse_args()
    for setting in args.settings:
        try:
            parse_setting(setting)
        except argparse.ArgumentTypeError as error:
            parser.error(f"--settings {error}")
    if args.memory_only and (args.gpu or args.edit_steps or args.reference):
        parser.error("--memory-only counts CPU tune memory alone: drop --gpu, --reference and use --edit-steps 0")
    if args.time_only and (args.gpu or args.edit_steps or args.reference or args.memory_only):
        parser.error("--time-only times the CPU tune alone: drop --gpu, --reference, --memory-only and use "
                     "--edit-steps 0")
    if args.worker:
        args.frames, args.size = args.frames[0], args.size[0]
        print(json.dumps(worker(args)))
        return

    rows = []  # (frames, size, setting, result, baseline result)
    for frames in args.frames:
        for size in args.size:
            results = {}
            for index, setting in enumerate(args.settings):
                command = [
                    sys.executable, __file__, "--worker", "--unet", args.unet, "--frames", str(frames),
                    "--size", str(size), "--steps", str(args.steps), "--setting", setting,
                    "--repeats", str(args.repeats), "--edit-steps", str(args.edit_steps if index == 0 else 0),
                    "--weights", args.weights, "--motion-module", args.motion_module,
                    *(["--gpu"] if args.gpu else []), *(["--memory-only"] if args.memory_only else []),
                    *(["--time-only"] if args.time_only else []),
                ]
                finished = subprocess.run(command, capture_output=True, text=True)
                if finished.returncode != 0:  # e.g. out of memory: say so in the table and go on
                    print(finished.stderr[-3000:], file=sys.stderr)
                    results[setting] = None
                    continue
                results[setting] = json.loads(finished.stdout.strip().splitlines()[-1])
                # Each result as soon as it exists: a run cut short (a device call's time limit) keeps it.
                print(f"measured {frames} frames at {size} px, {setting}: {json.dumps(results[setting])}", flush=True)
            baseline = results[args.settings[0]]
            rows += [(frames, size, setting, result, baseline) for setting, result in results.items()]

    measured = [row for row in rows if row[3] is not None]
    device = measured[0][3]["device"] if measured else "?"
    print(f"One-Shot Tune benchmark: UNet {args.unet}, {args.steps} steps per run, device {device}; "
          f"ratios against {args.settings[0]}")
    on_gpu = device.startswith("cuda")
    header = ("frames", "size", "setting", "median step s", "frames/s", "TFLOP/step", "TFLOP/s",
              *(("% of bf16 peak",) if on_gpu else ()), "500 steps s", "peak MB", "speed x", "mem x", "setup s",
              *(("syncs/step",) if on_gpu else ()))
    print(table_line(header, wide=2))
    for frames, size, setting, result, baseline in rows:
        if result is None:
            print(table_line((frames, size, setting, "failed (see stderr above)"), wide=2))
            continue
        step, tflop = result["median_step_s"], result["step_tflop"]
        ratios = (f"{baseline['median_step_s'] / step:.2f}", f"{result['peak_mb'] / baseline['peak_mb']:.2f}") \
            if baseline else ("-", "-")
        cells = (
            frames, size, setting, f"{step:.4f}", f"{frames / step:.1f}", f"{tflop:.4f}", f"{tflop / step:.3f}",
            *((f"{100 * tflop / step / GPU_BF16_TFLOPS:.1f}",) if on_gpu else ()),
            f"{500 * step:.1f}", f"{result['peak_mb']:.0f}", *ratios, f"{result['setup_s']:.2f}",
            *((f"{result['syncs_per_step']:.2f}",) if on_gpu else ()),
        )
        print(table_line(cells, wide=2))
    for _, _, setting, result, _ in measured[:len(args.settings)]:
        size_bytes, lora_bytes = result["weights_file_bytes"], result["motion_lora_file_bytes"]
        print(f"{setting}: {result['trainable_params'] / 1e6:.2f} M trained parameters; "
              f"tuned-weights file (fp16, as TAV Save Tuned Weights writes it): {megabytes(size_bytes)}; "
              f"as_comfy_lora: ComfyUI LoRA {megabytes(result['comfy_lora_file_bytes'])} + pack file "
              f"{megabytes(result['temporal_file_bytes'])}"
              + (f"; motion-LoRA file (fp16): {megabytes(lora_bytes)}" if lora_bytes else ""))

    print_memory_fit(args, measured)
    if args.reference:
        print_reference_table(args, rows)

    edit_rows = [row for row in rows if row[2] == args.settings[0] and row[3] is not None]
    if args.edit_steps and edit_rows:
        print(f"\nDDIM Invert Video + TAV Sample (cfg 7.5), {args.edit_steps} steps each, median of {args.repeats}; "
              f"TFLOP: one step of each counted, times {args.edit_steps}")
        header = ("frames", "size", "invert s", "sample s", "total s", "ms/frame/step", "TFLOP", "TFLOP/s",
                  *(("% of bf16 peak",) if on_gpu else ()), "peak MB", "UNet batch")
        print(table_line(header))
        for frames, size, _, result, _ in edit_rows:
            total = result["invert_s"] + result["sample_s"]
            per_frame_step = 1000 * total / (2 * args.edit_steps * frames)
            tflop = result["edit_tflop"]
            cells = (frames, size, f"{result['invert_s']:.3f}", f"{result['sample_s']:.3f}", f"{total:.3f}",
                     f"{per_frame_step:.2f}", f"{tflop:.3f}", f"{tflop / total:.3f}",
                     *((f"{100 * tflop / total / GPU_BF16_TFLOPS:.1f}",) if on_gpu else ()),
                     f"{result['edit_peak_mb']:.0f}", result["edit_unet_batch"])
            print(table_line(cells))
        print_edit_memory_fit(args, edit_rows)


def megabytes(size: int) -> str:
    return f"{size / 1e6:.1f} MB ({size / 2**20:.1f} MiB)"


def least_squares(points: list[tuple[float, float]]) -> tuple[float, float] | None:
    """Slope and intercept of the least-squares line through the points; None where fewer than two distinct x
    leave no line to fit."""
    if len({x for x, _ in points}) < 2:
        return None
    return statistics.linear_regression(*zip(*points, strict=True))


def print_memory_fit(args: argparse.Namespace, measured: list) -> None:
    """Peak tensor memory against frames: a least-squares line through the forward/backward peaks of each size
    and setting (the optimiser's step, whose peak does not depend on frames, can top them at few frames).
    On a GPU, max_memory_allocated has no phases: its peaks are fitted as they are."""
    fits = []
    for size in args.size:
        for setting in args.settings:
            results = [(frames, result) for frames, row_size, row_setting, result, _ in measured
                       if row_size == size and row_setting == setting]
            line = least_squares([(frames, result.get("forward_backward_peak_mb", result["peak_mb"]))
                                  for frames, result in results])
            if line is None:
                continue
            per_frame, fixed = line
            optimizer_step = max(result.get("optimizer_step_peak_mb", 0) for _, result in results)
            extrapolated = max(fixed + per_frame * args.extrapolate_frames, optimizer_step)
            fits.append((size, setting, fixed, per_frame, extrapolated))
    if not fits:
        return
    frame_counts = ", ".join(map(str, sorted(set(args.frames))))
    print(f"\nPeak tensor memory against frames (forward/backward peaks at {frame_counts} frames, least squares; "
          f"at {args.extrapolate_frames} frames: that line or the optimiser step's peak, whichever is higher)")
    header = ("size", "setting", "fixed MB", "MB per frame", f"at {args.extrapolate_frames} frames MB")
    print(table_line(header, wide=1))
    for size, setting, fixed, per_frame, extrapolated in fits:
        print(table_line((size, setting, f"{fixed:.0f}", f"{per_frame:.1f}", f"{extrapolated:.0f}"), wide=1))


def print_edit_memory_fit(args: argparse.Namespace, edit_rows: list) -> None:
    """Peak tensor memory of the edit against the UNet's batch, per size. ComfyUI runs cond and uncond in one
    batch (twice the frames) where it judges the free memory enough, else one after the other, so the line is
    read at both batches for --extrapolate-frames."""
    fits = []
    for size in args.size:
        line = least_squares([(result["edit_unet_batch"], result["edit_peak_mb"])
                              for _, row_size, _, result, _ in edit_rows if row_size == size])
        if line is None:
            continue
        per_batch_frame, fixed = line
        together, apart = (fixed + per_batch_frame * n * args.extrapolate_frames for n in (2, 1))
        fits.append((size, f"{fixed:.0f}", f"{per_batch_frame:.1f}", f"{together:.0f}", f"{apart:.0f}"))
    if not fits:
        return
    print("\nPeak tensor memory of the edit against the UNet's batch (least squares), read at "
          f"{args.extrapolate_frames} frames with cond and uncond in one batch and one after the other")
    print(table_line(("size", "fixed MB", "MB per frame", "together MB", "apart MB")))
    for cells in fits:
        print(table_line(cells))


def print_reference_table(args: argparse.Namespace, rows: list) -> None:
    """The reference implementation (run once per size) on the same UNet and sizes, beside each of our settings."""
    reference = REPO / ".reference"
    if not (reference / "site" / ".done").exists():
        raise SystemExit("no reference environment: run scripts/reference_env.sh first (see its header)")
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(reference / "site"), str(reference / "Tune-A-Video"), os.environ.get("PYTHONPATH", "")])}
    print(f"\nReference (showlab/Tune-A-Video as written: fp16 autocast and its xformers path on a GPU, with torch's "
          f"SDPA as the kernel where xformers is not installed; its gradient checkpointing) vs this pack, "
          f"{args.steps} steps")
    memory = "peak MB" if args.gpu else "RSS MB"  # the reference's CPU memory is its process's peak RSS
    header = ("frames", "size", "ours: setting", "ref step s", "ours step s", "speed-up", f"ref {memory}",
              f"ours {memory}", "ours TFLOP/s", "ref attention")
    print(table_line(header, wide=2))
    reference_results = {}
    for frames, size, setting, ours, _ in rows:
        if ours is None:
            continue
        if (frames, size) not in reference_results:
            command = [sys.executable, str(REPO / "benchmarks" / "reference_worker.py"), "--unet", args.unet,
                       "--frames", str(frames), "--size", str(size), "--steps", str(args.steps),
                       "--mixed-precision", "fp16" if args.gpu else "no",
                       *(["--gpu", "--xformers"] if args.gpu else [])]
            finished = subprocess.run(command, capture_output=True, text=True, env=environment)
            if finished.returncode != 0:
                print(finished.stderr[-3000:], file=sys.stderr)
            reference_results[frames, size] = (
                json.loads(finished.stdout.strip().splitlines()[-1]) if finished.returncode == 0 else None
            )
        ref = reference_results[frames, size]
        if ref is None:
            print(table_line((frames, size, setting, "reference failed (see stderr above)"), wide=2))
            continue
        cells = (frames, size, setting, f"{ref['median_step_s']:.4f}", f"{ours['median_step_s']:.4f}",
                 f"{ref['median_step_s'] / ours['median_step_s']:.2f}x", f"{ref['peak_mb']:.0f}",
                 f"{ours.get('rss_mb', ours['peak_mb']):.0f}", f"{ours['step_tflop'] / ours['median_step_s']:.3f}",
                 ref["attention"])
        print(table_line(cells, wide=2))
    print("Note: with gradient checkpointing the reference's down-block transformers get no gradient (reentrant "
          "checkpoints whose inputs need none), so its step does less work than the method asks for.")


if __name__ == "__main__":
    main()
