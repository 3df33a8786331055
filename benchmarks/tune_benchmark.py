"""One-Shot Tune, DDIM inversion and TAV Sample speed and memory, as tables (medians; never a timed test).

    .venv/bin/python benchmarks/tune_benchmark.py                       # CPU smoke run, tiny UNet
    .venv/bin/python benchmarks/tune_benchmark.py --unet sd15 --frames 24 --size 512 --steps 30 \
        --edit-steps 50 --gpu
    .venv/bin/python benchmarks/tune_benchmark.py --unet sd15_mini --reference    # side by side, CPU

--reference also times the public reference implementation (benchmarks/reference_worker.py, in the
environment scripts/reference_env.sh builds) on the same architecture and sizes, and prints the ratio.

Each configuration runs in its own process so peak memory (RSS on the CPU, max_memory_allocated on
a GPU) belongs to that configuration alone. Step times come from the progress hook, which fires
after the loss read-back (a device sync), so they are wall-clock times of whole optimiser steps.
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))


def worker(args: argparse.Namespace) -> dict:
    from comfy_host import setup_host

    setup_host(cpu=not args.gpu, nodes=False)
    import comfy.model_management
    import comfy.utils
    import torch
    from comfyui_tune_a_video.comfy_glue.one_shot_tune import GPU_REPORT_EVERY, tune
    from comfyui_tune_a_video.comfy_glue.unet_inflation import inflate_model
    from comfyui_tune_a_video.tav_core.inflation_config import InflationConfig
    from comfyui_tune_a_video.tav_core.tuning import PrecisionChoice, TuneSettings
    from tiny_models import CONTEXT_DIM, full_unet, tiny_unet

    started = time.perf_counter()
    if args.unet == "tiny":
        base = tiny_unet("sd1", seed=0)
    else:
        base = full_unet(args.unet, seed=0, dtype=torch.float16 if args.gpu else torch.float32)
    context_dim = {"tiny": CONTEXT_DIM, "sd15_mini": 64, "sd15": 768, "sdxl": 2048}[args.unet]
    model = inflate_model(base, InflationConfig())
    build_s = time.perf_counter() - started

    generator = torch.Generator().manual_seed(0)
    latent = {"samples": torch.randn(args.frames, 4, args.size // 8, args.size // 8, generator=generator)}
    extras = {"pooled_output": torch.randn(1, 1280, generator=generator)} if args.unet == "sdxl" else {}
    conditioning = [[torch.randn(1, 77, context_dim, generator=generator), extras]]

    stamps: list[float] = []
    comfy.utils.set_progress_bar_global_hook(lambda *args, **kwargs: stamps.append(time.perf_counter()))
    device = comfy.model_management.get_torch_device()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    settings = TuneSettings(
        steps=args.steps, learning_rate=3e-5, seed=0, gradient_checkpointing=args.checkpointing,
        precision=PrecisionChoice(args.precision),
    )
    step_flops = count_step_flops(model, latent, conditioning, settings)
    stamps.clear()
    tune_started = time.perf_counter()
    tune(model, latent, conditioning, settings)
    per_report = 1 if device.type == "cpu" else GPU_REPORT_EVERY
    # The first interval includes model loading and warm-up: skip it.
    step_times = [(b - a) / per_report for a, b in zip(stamps[1:], stamps[2:], strict=False)]
    first_report_s = stamps[0] - tune_started
    peak_mb = (
        torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda"
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    )
    edit = time_edit(model, latent, conditioning, args.edit_steps, args.repeats) if args.edit_steps else {}
    return {
        **edit,
        "build_s": build_s,
        "load_and_first_steps_s": first_report_s,
        "median_step_s": statistics.median(step_times) if step_times else float("nan"),
        "step_tflop": step_flops / 1e12,
        "peak_mb": peak_mb,
        "device": str(device),
    }


def count_step_flops(model, latent: dict, conditioning: list, settings) -> float:
    """FLOPs of one optimiser step (forward, backward and any recomputation), counted by torch on one extra
    step before the timed run."""
    from dataclasses import replace

    from comfyui_tune_a_video.comfy_glue.one_shot_tune import tune
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        tune(model, latent, conditioning, replace(settings, steps=1))
    return float(counter.get_total_flops())


def time_edit(model, latent: dict, conditioning: list, steps: int, repeats: int) -> dict:
    """Median wall time of DDIM Invert Video and TAV Sample (cfg on), each `steps` steps."""
    import comfy.model_management
    from comfyui_tune_a_video.comfy_glue.ddim_editing import invert_video, sample_video

    def timed(fn):
        comfy.model_management.soft_empty_cache()
        started = time.perf_counter()
        result = fn()
        float(result["samples"].float().sum())  # wait for the device
        return time.perf_counter() - started, result

    invert_s, sample_s = [], []
    for _ in range(repeats + 1):  # the first round warms up
        seconds, inverted = timed(lambda: invert_video(model, latent, conditioning, steps, 1.0, "benchmark"))
        invert_s.append(seconds)
        seconds, _ = timed(
            partial(sample_video, model, conditioning, conditioning, inverted, steps, 7.5, 0.0, 0, "benchmark")
        )
        sample_s.append(seconds)
    return {"invert_s": statistics.median(invert_s[1:]), "sample_s": statistics.median(sample_s[1:])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--unet", choices=["tiny", "sd15_mini", "sd15", "sdxl"], default="tiny")
    parser.add_argument("--frames", type=int, nargs="+", default=[8])
    parser.add_argument("--size", type=int, nargs="+", default=[64], help="pixel resolution (latent = size / 8)")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--edit-steps", type=int, default=10, help="DDIM steps for inversion and sampling (0: skip)")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds of inversion + sampling")
    parser.add_argument("--gpu", action="store_true")
    parser.add_argument("--reference", action="store_true",
                        help="also time the reference implementation (needs scripts/reference_env.sh first)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--checkpointing", type=lambda v: v == "on", default=True, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        args.frames, args.size = args.frames[0], args.size[0]
        print(json.dumps(worker(args)))
        return

    rows = []
    for frames in args.frames:
        for size in args.size:
            results = {}
            for checkpointing in ("off", "on"):
                command = [
                    sys.executable, __file__, "--worker", "--unet", args.unet, "--frames", str(frames),
                    "--size", str(size), "--steps", str(args.steps), "--precision", args.precision,
                    "--checkpointing", checkpointing, "--repeats", str(args.repeats),
                    "--edit-steps", str(args.edit_steps if checkpointing == "off" else 0),
                    *(["--gpu"] if args.gpu else []),
                ]
                output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
                results[checkpointing] = json.loads(output.strip().splitlines()[-1])
            for checkpointing, result in results.items():
                rows.append((frames, size, checkpointing, result, results["off"]))

    device = rows[0][3]["device"] if rows else "?"
    print(f"One-Shot Tune benchmark: UNet {args.unet}, {args.steps} steps per run, device {device}, "
          f"precision {args.precision}")
    header = ("frames", "size", "ckpt", "median step s", "frames/s", "TFLOP/step", "TFLOP/s", "peak MB",
              "step x vs off", "mem x vs off", "load+warmup s")
    print(" | ".join(f"{h:>13}" for h in header))
    for frames, size, checkpointing, result, off in rows:
        cells = (
            frames, size, checkpointing, f"{result['median_step_s']:.4f}", f"{frames / result['median_step_s']:.1f}",
            f"{result['step_tflop']:.4f}", f"{result['step_tflop'] / result['median_step_s']:.3f}",
            f"{result['peak_mb']:.0f}", f"{result['median_step_s'] / off['median_step_s']:.2f}",
            f"{result['peak_mb'] / off['peak_mb']:.2f}", f"{result['load_and_first_steps_s']:.2f}",
        )
        print(" | ".join(f"{c:>13}" for c in cells))

    if args.reference:
        print_reference_table(args, rows)

    if args.edit_steps:
        print(f"\nDDIM Invert Video + TAV Sample (cfg 7.5), {args.edit_steps} steps each, median of {args.repeats}")
        header = ("frames", "size", "invert s", "sample s", "total s", "ms/frame/step")
        print(" | ".join(f"{h:>13}" for h in header))
        for frames, size, checkpointing, result, _ in rows:
            if checkpointing != "off":
                continue
            total = result["invert_s"] + result["sample_s"]
            per_frame_step = 1000 * total / (2 * args.edit_steps * frames)
            cells = (frames, size, f"{result['invert_s']:.3f}", f"{result['sample_s']:.3f}", f"{total:.3f}",
                     f"{per_frame_step:.2f}")
            print(" | ".join(f"{c:>13}" for c in cells))


def print_reference_table(args: argparse.Namespace, rows: list) -> None:
    """The reference implementation on the same UNet and sizes, beside ours with gradient checkpointing."""
    reference = REPO / ".reference"
    if not (reference / "site" / ".done").exists():
        raise SystemExit("no reference environment: run scripts/reference_env.sh first (see its header)")
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(reference / "site"), str(reference / "Tune-A-Video"), os.environ.get("PYTHONPATH", "")])}
    print(f"\nReference (showlab/Tune-A-Video as written: fp16 autocast on a GPU, xformers if importable, its "
          f"gradient checkpointing) vs this pack (checkpointing on), {args.steps} steps")
    header = ("frames", "size", "ref step s", "ours step s", "speed-up", "ref peak MB", "ours peak MB",
              "ours TFLOP/s", "ref attention")
    print(" | ".join(f"{h:>13}" for h in header))
    for frames, size, checkpointing, ours, _ in rows:
        if checkpointing != "on":
            continue
        command = [sys.executable, str(REPO / "benchmarks" / "reference_worker.py"), "--unet", args.unet,
                   "--frames", str(frames), "--size", str(size), "--steps", str(args.steps),
                   "--mixed-precision", "fp16" if args.gpu else "no", *(["--gpu", "--xformers"] if args.gpu else [])]
        output = subprocess.run(command, check=True, capture_output=True, text=True, env=environment).stdout
        ref = json.loads(output.strip().splitlines()[-1])
        cells = (frames, size, f"{ref['median_step_s']:.4f}", f"{ours['median_step_s']:.4f}",
                 f"{ref['median_step_s'] / ours['median_step_s']:.2f}x", f"{ref['peak_mb']:.0f}",
                 f"{ours['peak_mb']:.0f}", f"{ours['step_tflop'] / ours['median_step_s']:.3f}", ref["attention"])
        print(" | ".join(f"{c:>13}" for c in cells))
    print("Note: with gradient checkpointing the reference's down-block transformers get no gradient (reentrant "
          "checkpoints whose inputs need none), so its step does less work than the method asks for.")


if __name__ == "__main__":
    main()
