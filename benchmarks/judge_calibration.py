"""How the shapes-world judge reads shapes: the instrument behind every right-object figure, measured on its own.

    .venv/bin/python benchmarks/judge_calibration.py              # 600 seeded scenes (~1 min, 2 cores)
    .venv/bin/python benchmarks/judge_calibration.py --gate       # and the motion gate's 50 videos (~2 min)

The judge tells a square from a circle by how much of its axis-aligned bounding box the object fills (square
above shapes_demo.judge.SQUARE_FILL, circle above CIRCLE_FILL). Per true shape, this prints what the judge reads
and that fill's 5th, 50th and 95th percentiles, for the world's own frames rendered exactly and after the demo
VAE's round trip (no model sampled, so nothing here depends on the method). With --gate it samples the demo motion
module's quality gate (its prompts, seeds and frames) and sorts every frame the judge calls wrong by what is wrong,
with the fills, so a right-object figure can be read as wrong objects or as shapes the judge misreads.
Writes the tables to --out.
"""

import argparse
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]

FRAME_SOURCES = ("rendered", "through the demo VAE")
VAE_BATCH = 50


@dataclass
class ShapeReadings:
    """How the judge read the frames of one true shape."""

    read_as: Counter = field(default_factory=Counter)  # judged shape (None: no object) -> frames
    right_object: int = 0  # frames whose judged colour, shape and background are all the scene's
    fills: list[float] = field(default_factory=list)

    @property
    def frames(self) -> int:
        return sum(self.read_as.values())


def read_shapes(frames: np.ndarray, targets: list[tuple[str, str, str]]) -> dict[str, ShapeReadings]:
    """frames: (N, H, W, 3) RGB uint8; targets: each frame's true (colour, shape, background)."""
    from comfyui_tune_a_video.shapes_demo.judge import judge

    readings: dict[str, ShapeReadings] = defaultdict(ShapeReadings)
    for frame, target in zip(frames, targets, strict=True):
        verdict, reading = judge(frame), readings[target[1]]
        reading.read_as[verdict.shape] += 1
        reading.right_object += verdict.matches(*target)
        if verdict.box_fill is not None:
            reading.fills.append(verdict.box_fill)
    return dict(sorted(readings.items()))


def miss_kind(verdict, target: tuple[str, str, str]) -> str | None:
    """What the judge found wrong in one frame, in words (None: the frame is right)."""
    if verdict.matches(*target):
        return None
    if verdict.shape is None:
        return "no object"
    wrong = [name for name, got, want in zip(("colour", "shape", "background"),
                                             (verdict.colour, verdict.shape, verdict.background), target,
                                             strict=True) if got != want]
    if wrong == ["shape"]:
        return f"{target[1]} read as {verdict.shape}"
    return "wrong " + " and ".join(wrong)


def tally_misses(frames: np.ndarray, targets: list[tuple[str, str, str]]) -> dict[str, list[float]]:
    """Every wrong frame by miss kind, most common first: the kind -> the box fills of its frames."""
    from comfyui_tune_a_video.shapes_demo.judge import judge

    misses: dict[str, list[float]] = defaultdict(list)
    for frame, target in zip(frames, targets, strict=True):
        verdict = judge(frame)
        kind = miss_kind(verdict, target)
        if kind is not None:
            misses[kind].append(np.nan if verdict.box_fill is None else verdict.box_fill)
    return dict(sorted(misses.items(), key=lambda item: -len(item[1])))


def vae_round_trip(vae, frames: np.ndarray) -> np.ndarray:
    import torch

    out = []
    with torch.inference_mode():
        for start in range(0, len(frames), VAE_BATCH):
            images = torch.from_numpy(frames[start:start + VAE_BATCH]).float() / 255
            decoded = vae.decode(vae.encode(images)).clamp(0, 1).reshape(-1, *frames.shape[1:])
            out.append((decoded * 255).round().to(torch.uint8).numpy())
    return np.concatenate(out)


def percentiles(values: list[float]) -> str:
    if not values:
        return "-"
    return " / ".join(f"{v:.2f}" for v in np.nanpercentile(values, [5, 50, 95]))


def readings_table(source: str, readings: dict[str, ShapeReadings]) -> list[str]:
    from comfyui_tune_a_video.shapes_demo.world import SHAPES

    lines = [f"### {source}", "", "| true shape | frames | right object | " + " | ".join(f"read as {s}" for s in SHAPES)
             + " | read as no object | box fill p5 / p50 / p95 |", "| --- |" + " --- |" * (len(SHAPES) + 4)]
    for shape, reading in readings.items():
        counts = " | ".join(str(reading.read_as[s]) for s in SHAPES)
        lines.append(f"| {shape} | {reading.frames} | {reading.right_object / reading.frames:.3f} | {counts} | "
                     f"{reading.read_as[None]} | {percentiles(reading.fills)} |")
    return [*lines, ""]


def misses_table(misses: dict[str, list[float]], frames: int) -> list[str]:
    wrong = sum(len(fills) for fills in misses.values())
    lines = [f"{frames - wrong} of {frames} frames right ({(frames - wrong) / frames:.3f}).", "",
             "| miss | frames | box fill min / median / max |", "| --- | --- | --- |"]
    for kind, fills in misses.items():
        found = [f for f in fills if not np.isnan(f)]
        spread = f"{min(found):.2f} / {np.median(found):.2f} / {max(found):.2f}" if found else "-"
        lines.append(f"| {kind} | {len(fills)} | {spread} |")
    return [*lines, ""]


def run(args: argparse.Namespace) -> dict:
    """Runs the calibration, prints and writes the report; returns the readings per frame source (and the
    gate's misses with --gate)."""
    from tav_dev.comfy_host import setup_host

    setup_host()
    from comfyui_tune_a_video.nodes.load_demo_model import LoadDemoModel
    from comfyui_tune_a_video.shapes_demo.judge import CIRCLE_FILL, SQUARE_FILL
    from comfyui_tune_a_video.shapes_demo.world import random_scene, render

    started = time.monotonic()
    model, clip, vae = LoadDemoModel.execute().result
    rng = np.random.default_rng(args.seed)
    scenes = [random_scene(rng) for _ in range(args.scenes)]
    targets = [(s.colour, s.shape, s.background) for s in scenes]
    rendered = np.stack([render(s) for s in scenes])
    result = {source: read_shapes(frames, targets)
              for source, frames in zip(FRAME_SOURCES, (rendered, vae_round_trip(vae, rendered)), strict=True)}
    lines = ["# The shapes-world judge, calibrated", "",
             f"{args.scenes} seeded scenes (seed {args.seed}) of the world, rendered and through the demo VAE's "
             f"round trip: what the judge reads, per true shape. The judge's square starts at a box fill above "
             f"{SQUARE_FILL}, its circle above {CIRCLE_FILL}. Command: `python benchmarks/judge_calibration.py "
             f"--scenes {args.scenes} --seed {args.seed}{' --gate' if args.gate else ''}`", ""]
    for source in FRAME_SOURCES:
        lines += readings_table(source, result[source])
    if args.gate:
        from comfyui_tune_a_video.comfy_glue.demo_model import DEMO_MOTION_FILE
        from comfyui_tune_a_video.nodes.load_motion_module import LoadMotionModule
        from comfyui_tune_a_video.shapes_demo.world import parse_caption
        from tav_dev.motion_gate import GATE_FRAMES, GATE_PROMPTS, GATE_SEED, gate_videos

        motion = LoadMotionModule.execute(DEMO_MOTION_FILE.name).result[0]
        captions, videos = gate_videos(model, clip, vae, motion, GATE_PROMPTS, GATE_SEED, GATE_FRAMES)
        frames = np.concatenate(videos)
        gate_targets = [parse_caption(text) for text in captions for _ in range(GATE_FRAMES)]
        result["gate"] = tally_misses(frames, gate_targets)
        lines += [f"### The demo motion module's gate ({GATE_PROMPTS} prompts x {GATE_FRAMES} frames, seed "
                  f"{GATE_SEED}), every wrong frame", "", *misses_table(result["gate"], len(frames))]
    lines.append(f"{(time.monotonic() - started) / 60:.1f} min.")
    report = "\n".join(lines) + "\n"
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report)
    print(report)
    print(f"[judge_calibration] wrote {out}")
    return result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenes", type=int, default=600, help="seeded scenes, one frame each")
    parser.add_argument("--seed", type=int, default=12345)
    parser.add_argument("--gate", action="store_true", help="also judge the demo motion module's gate videos")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "judge_calibration.md"))
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    main()
