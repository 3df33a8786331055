"""What moves the video? Text-to-video, motion transfer and edits, measured in the shapes world.

    .venv/bin/python benchmarks/shapes_motion.py                # 8 clips x 6 variants (~30 min, 2 cores)
    .venv/bin/python benchmarks/shapes_motion.py --clips 1 --variants motion_untuned,per_frame_t2i --tune-steps 5

Every clip (seeds below 1,000,000: never drawn by tools/train_demo_motion.py) runs as one real ComfyUI graph on
a headless server: TAV Load Demo Model, TAV Load Motion Module with the demo motion module, Inflate UNet /
One-Shot Tune per variant, then for every variant
- text-to-video from fresh noise (TAV Sample on an empty latent, the same seed for every variant), with the
  source caption and with each edited caption: object found, right object, consistency, smoothness (mean
  centroid acceleration), speed (against the world's own clips of this length);
- motion transfer: the fresh-noise samples with the edited captions, their centred centroid path against the
  source's (what the tuned variants learned of the clip's motion; for untuned variants, what they draw anyway);
- edits from the inversion (DDIM Invert Video, then TAV Sample), as benchmarks/shapes_edit.py measures them.
Prints markdown tables, writes them to --out and a contact sheet (source row, one row per variant) beside it.
"""

import argparse
import math
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]

from tav_dev.shapes_bench import Graph, add_shared_arguments, clip_inputs, edit_targets, mean  # noqa: E402

DEMO_MOTION_MODULE = "tav_shapes_world_motion.safetensors"
EDITS = ("colour", "shape", "background", "all")
TODAYS_FULL_ROW = {"text_alignment": 0.934, "motion_error": 2.48}  # benchmarks/shapes_edit.md, full, 8 clips
TARGETS = {"right_object": 0.95, "consistency": 0.9, "smoothness_ratio": 3.0, "trajectory_error": 3.0,
           "trajectory_ratio": 2.0}


@dataclass(frozen=True)
class Plan:
    attention: str = "sparse_causal"
    temporal_layers: bool = True
    motion_module: bool = False
    tuned: bool = False
    motion_training: str = "lora"
    fresh_noise_share: float = 0.0  # One-Shot Tune's share of steps fitted from noise alone


AS_ANIMATEDIFF = {"attention": "per_frame", "temporal_layers": False, "motion_module": True}
VARIANTS = {  # None: the image model, every frame sampled alone from fresh noise
    "per_frame_t2i": None,
    "inflated_untuned": Plan(),
    "tav_tuned": Plan(tuned=True),
    "motion_untuned": Plan(**AS_ANIMATEDIFF),
    "motion_lora": Plan(**AS_ANIMATEDIFF, tuned=True),
    "motion_full": Plan(**AS_ANIMATEDIFF, tuned=True, motion_training="full"),
    "motion_lora_fresh": Plan(**AS_ANIMATEDIFF, tuned=True, fresh_noise_share=1.0),
    "hybrid": Plan(motion_module=True, tuned=True),
}
OPT_IN_VARIANTS = ("motion_full", "motion_lora_fresh")  # run only when named
DEFAULT_VARIANTS = [v for v in VARIANTS if v not in OPT_IN_VARIANTS]  # the six
T2V_METRICS = ("object_found", "right_object", "consistency", "acceleration", "speed")
EDIT_METRICS = ("text_alignment", "motion_error", "consistency")


@dataclass(frozen=True)
class Settings:
    frames: int
    tune_steps: int
    learning_rate: float
    ddim_steps: int
    cfg: float


def clip_graph(video: str, caption: str, targets: dict, variants: list[str], settings: Settings, seed: int):
    """One prompt for one clip; saves[(variant, "t2v" | "edit", kind)] is the SaveImage node of each sample."""
    from comfyui_tune_a_video.shapes_demo.world import caption as make_caption

    g = Graph()
    model, clip, vae, latents, empty, source = clip_inputs(g, video, caption)
    motion = [g.add("TAV_LoadMotionModule", motion_module=DEMO_MOTION_MODULE, motion_lora="none",
                    lora_strength=1.0), 0]
    prompts = {kind: [g.add("CLIPTextEncode", clip=clip, text=make_caption(*target)), 0]
               for kind, target in targets.items()}
    fresh = [g.add("EmptyLatentImage", width=64, height=64, batch_size=settings.frames), 0]
    saves = {}

    def save(key: tuple[str, str, str], sampled: str) -> None:
        decoded = g.add("VAEDecode", samples=[sampled, 0], vae=vae)
        saves[key] = g.add("SaveImage", images=[decoded, 0], filename_prefix="/".join(key) + "/frame")

    for variant in variants:
        plan = VARIANTS[variant]
        if plan is None:
            for kind, prompt in prompts.items():
                save((variant, "t2v", kind), g.add(
                    "KSampler", model=model, seed=seed, steps=settings.ddim_steps, cfg=settings.cfg,
                    sampler_name="ddim", scheduler="ddim_uniform", positive=prompt, negative=empty,
                    latent_image=fresh, denoise=1.0))
            continue
        inputs = {"motion_module": motion} if plan.motion_module else {}
        video_model = [g.add("TAV_InflateUNet", model=model, attention=plan.attention,
                             temporal_layers=plan.temporal_layers, temporal_position_encoding="none",
                             groupnorm="per_frame", **inputs), 0]
        if plan.tuned:
            video_model = [g.add("TAV_OneShotTune", model=video_model, latents=latents, conditioning=source,
                                 steps=settings.tune_steps, learning_rate=settings.learning_rate, seed=seed,
                                 gradient_checkpointing="off", precision="auto", save_name="", caption=caption,
                                 motion_training=plan.motion_training, motion_rank=32, trainable="pack",
                                 fresh_noise_share=plan.fresh_noise_share), 0]
        inverted = [g.add("TAV_DDIMInvertVideo", model=video_model, latents=latents, conditioning=empty,
                          steps=settings.ddim_steps, inversion_strength=1.0), 0]
        for kind, prompt in prompts.items():
            for mode, latent in (("t2v", fresh), ("edit", inverted)):
                if mode == "edit" and kind == "source":
                    continue
                save((variant, mode, kind), g.add(
                    "TAV_Sample", model=video_model, positive=prompt, negative=empty, latent=latent,
                    steps=settings.ddim_steps, cfg=settings.cfg, eta=0.0, seed=seed))
    return g.nodes, saves


def run(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """Runs the benchmark, prints and writes the report; returns the headline numbers per variant."""
    from tav_dev.comfy_host import comfyui_path, setup_host

    setup_host()
    from comfyui_tune_a_video.shapes_demo.metrics import score_edit, score_motion
    from comfyui_tune_a_video.shapes_demo.world import PATHS, random_clip
    from tav_dev.contact_sheet import read_frames
    from tav_dev.headless_comfy import ComfyServer, history_error
    from tav_dev.shapes_clips import write_lossless_mp4

    settings = Settings(args.frames, args.tune_steps, args.learning_rate, args.ddim_steps, args.cfg)
    variants = args.variants.split(",")
    t2v, edits = defaultdict(list), defaultdict(list)  # (variant, "source" | "edited") -> [MotionScore]; variant ->
    sheet_rows: list[tuple[str, np.ndarray]] = []
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="tav-shapes-motion-"))
    started = time.monotonic()
    with ComfyServer(comfyui_path(), workdir) as server:
        for number in range(args.clips):
            seed = args.first_seed + number
            clip = random_clip(seed, frames=args.frames, path=PATHS[number % len(PATHS)])
            video = f"clip_{seed}.mp4"
            write_lossless_mp4(server.input_dir / video, clip.frames)
            targets = edit_targets(clip.scenes[0], seed)
            prompt, saves = clip_graph(video, clip.caption, targets, variants, settings, seed)
            clip_started = time.monotonic()
            history = server.run_prompt(prompt, timeout=3600)
            if history["status"].get("status_str") != "success":
                raise RuntimeError(f"clip {seed}: {history_error(history)}\n{server.log()[-3000:]}")
            if number == 0:
                sheet_rows.append((f"source: {clip.caption}", clip.frames))
            for (variant, mode, kind), node in saves.items():
                frames = read_frames(server.output_files(history, node))
                if mode == "t2v":
                    score = score_motion(frames, targets[kind], clip.centroids)
                    t2v[variant, "source" if kind == "source" else "edited"].append(score)
                    if number == 0 and kind == args.sheet_edit:
                        sheet_rows.append((f"text-to-video, {kind} edit: {variant}", frames))
                else:
                    edits[variant].append(score_edit(frames, clip.frames, targets[kind]))
            print(f"[shapes_motion] clip {number + 1}/{args.clips}: {clip.caption}, "
                  f"{time.monotonic() - clip_started:.0f} s", flush=True)
            # The report so far after every clip: a stopped run keeps what it finished.
            summary = {variant: summarise(t2v, edits, variant) for variant in variants}
            report = format_report(summary, settings, args, time.monotonic() - started, number + 1)
            write_outputs(Path(args.out), report, sheet_rows, args.first_seed)
    print(report)
    print(f"[shapes_motion] wrote {args.out} and {Path(args.out).with_suffix('.png')}")
    return summary


def write_outputs(out: Path, report: str, sheet_rows: list[tuple[str, np.ndarray]], first_seed: int) -> None:
    """The markdown report and the contact sheet beside it."""
    from tav_dev.contact_sheet import write_contact_sheet

    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report)
    write_contact_sheet(out.with_suffix(".png"), sheet_rows, f"shapes_motion, clip seed {first_seed}", scale=1)


def summarise(t2v, edits, variant: str) -> dict[str, float]:
    """Mean of each metric (NaNs skipped): t2v_<caption>_<metric>, transfer_error, edit_<metric>."""
    row = {}
    for caption in ("source", "edited"):
        for name in T2V_METRICS:
            row[f"t2v_{caption}_{name}"] = mean([getattr(score, name) for score in t2v[variant, caption]])
    row["transfer_error"] = mean([score.trajectory_error for score in t2v[variant, "edited"]])
    for name in EDIT_METRICS:
        row[f"edit_{name}"] = mean([getattr(score, name) for score in edits[variant]])
    return row


def world_speeds(frames: int) -> tuple[float, float, float]:
    """(lowest, median, highest) mean speed of the world's clips of this length, px/frame."""
    from comfyui_tune_a_video.shapes_demo.world import clip_speeds

    speeds = clip_speeds(frames)
    return float(speeds.min()), float(np.median(speeds)), float(speeds.max())


def fmt(value: float, digits: int = 3) -> str:
    return "-" if math.isnan(value) else f"{value:.{digits}f}"


def format_report(summary: dict[str, dict[str, float]], settings: Settings, args, seconds: float, clips: int) -> str:
    low, median, high = world_speeds(settings.frames)
    lines = [
        "# Shapes-world motion benchmark",
        "",
        f"{clips} clips of {settings.frames} frames at 64x64 (seeds {args.first_seed}-"
        f"{args.first_seed + clips - 1}, paths linear/diagonal/arc/bounce in turn), edits {', '.join(EDITS)}; "
        f"One-Shot Tune {settings.tune_steps} steps at lr {settings.learning_rate:g}; DDIM {settings.ddim_steps} "
        f"steps, cfg {settings.cfg:g}; demo motion module {DEMO_MOTION_MODULE}; {seconds / 60:.1f} min. "
        f"The world's own {settings.frames}-frame clips move {low:.2f}-{high:.2f} px/frame (median {median:.2f}). "
        f"Command: `{' '.join(['python'] + sys.argv)}`",
        "",
        "## Text-to-video from fresh noise",
        "",
        "| variant | caption | object found | right object | consistency | acceleration (px/frame^2) | "
        "speed (px/frame) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for variant, row in summary.items():
        for caption in ("source", "edited"):
            cells = [fmt(row[f"t2v_{caption}_{name}"], 2 if name in ("acceleration", "speed") else 3)
                     for name in T2V_METRICS]
            lines.append(f"| {variant} | {caption} | " + " | ".join(cells) + " |")
    lines += ["", "## Motion transfer and edits from the inversion", "",
              "| variant | transfer: centred trajectory error (px) | edit text alignment | edit motion error (px) | "
              "edit consistency |", "| --- | --- | --- | --- | --- |"]
    for variant, row in summary.items():
        lines.append(f"| {variant} | {fmt(row['transfer_error'], 2)} | {fmt(row['edit_text_alignment'])} | "
                     f"{fmt(row['edit_motion_error'], 2)} | {fmt(row['edit_consistency'])} |")
    lines += ["", "Variants: per_frame_t2i = the image model with the stock KSampler, every frame alone; "
              "inflated_untuned = Inflate UNet as Tune-A-Video (sparse-causal attention, zero temporal layers); "
              "tav_tuned = that, One-Shot Tune'd on the clip (today's pack); motion_untuned = Inflate UNet as "
              "AnimateDiff runs a module (per-frame attention, no temporal layers) with the demo motion module; "
              "motion_lora = that, One-Shot Tune'd with a motion LoRA (rank 32) beside the to_q deltas; "
              "motion_full (when run) = the same with every motion-module weight tuned (motion_training full); "
              "motion_lora_fresh (when run) = motion_lora with every step fitted from noise alone at the top of the "
              "schedule (fresh_noise_share 1); "
              "hybrid = Tune-A-Video's inflation and temporal layers plus the motion module, One-Shot Tune'd "
              "(motion LoRA, to_q, temporal layers).", "",
              "Metrics: right object = frames whose judged colour, shape and background match the caption; "
              "consistency = consecutive frames showing the same judged object; acceleration = mean |c[i+1] - 2c[i] "
              "+ c[i-1]| of the judged centroid (lower is smoother); speed = mean centroid step; transfer error = "
              "mean distance between the sample's and the source's centroid paths once each is centred on its own "
              "mean (the motion's shape and timing, wherever it is drawn), over the edited captions' fresh-noise "
              "samples; edit metrics as benchmarks/shapes_edit.py (text alignment over the four edit kinds, "
              "motion error = centroid distance to the source's).", ""]
    lines += ["Targets:", *target_checks(summary, low, high), ""]
    return "\n".join(lines)


def target_checks(summary: dict[str, dict[str, float]], low: float, high: float) -> list[str]:
    def verdict(ok: bool) -> str:
        return "met" if ok else "NOT met"

    checks = []
    motion = summary.get("motion_untuned")
    if motion is not None:
        right, consistency = motion["t2v_edited_right_object"], motion["t2v_edited_consistency"]
        speed = motion["t2v_edited_speed"]
        checks += [
            f"- motion_untuned text-to-video right object {right:.3f} (>= {TARGETS['right_object']}): "
            f"{verdict(right >= TARGETS['right_object'])}",
            f"- motion_untuned consistency {consistency:.3f} (>= {TARGETS['consistency']}): "
            f"{verdict(consistency >= TARGETS['consistency'])}",
            f"- motion_untuned speed {speed:.2f} px/frame (world {low:.2f}-{high:.2f}): "
            f"{verdict(low <= speed <= high)}",
        ]
        if "per_frame_t2i" in summary:
            ratio = summary["per_frame_t2i"]["t2v_edited_acceleration"] / motion["t2v_edited_acceleration"]
            checks.append(f"- per_frame_t2i acceleration / motion_untuned: {ratio:.1f}x (>= "
                          f"{TARGETS['smoothness_ratio']}): {verdict(ratio >= TARGETS['smoothness_ratio'])}")
        for variant in ("motion_lora", "motion_lora_fresh"):
            if variant not in summary:
                continue
            error, untuned = summary[variant]["transfer_error"], motion["transfer_error"]
            checks += [
                f"- {variant} transfer error {error:.2f} px (<= {TARGETS['trajectory_error']}): "
                f"{verdict(error <= TARGETS['trajectory_error'])}",
                f"- motion_untuned / {variant} transfer error: {untuned / error:.1f}x (>= "
                f"{TARGETS['trajectory_ratio']}): {verdict(untuned / error >= TARGETS['trajectory_ratio'])}",
            ]
        if "motion_full" in summary:
            error = summary["motion_full"]["transfer_error"]
            checks.append(f"- beside the targets, motion_full's transfer error: {error:.2f} px, "
                          f"{motion['transfer_error'] / error:.1f}x the untuned module's")
    for variant in ("hybrid", "motion_lora", "motion_lora_fresh"):
        if variant in summary:
            align, error = summary[variant]["edit_text_alignment"], summary[variant]["edit_motion_error"]
            ok = align >= TODAYS_FULL_ROW["text_alignment"] and error <= TODAYS_FULL_ROW["motion_error"]
            checks.append(f"- {variant} edits {align:.3f} / {error:.2f} px against today's full row "
                          f"{TODAYS_FULL_ROW['text_alignment']} / {TODAYS_FULL_ROW['motion_error']} px: "
                          f"{'no worse' if ok else 'WORSE'}")
    return checks


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_shared_arguments(parser, DEFAULT_VARIANTS, "shapes_motion.md")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--sheet-edit", default="colour", choices=EDITS, help="the edit the contact sheet shows")
    args = parser.parse_args(argv)
    unknown = set(args.variants.split(",")) - set(VARIANTS)
    if unknown:
        parser.error(f"unknown variants: {sorted(unknown)}")
    return run(args)


if __name__ == "__main__":
    main()
