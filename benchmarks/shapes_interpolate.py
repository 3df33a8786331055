"""Can the video's own tuned model fill in dropped frames? TAV Interpolate Frames, measured on the shapes world.

    .venv/bin/python benchmarks/shapes_interpolate.py               # 8 clips x 3 variants
    .venv/bin/python benchmarks/shapes_interpolate.py --clips 1 --variants untuned,tuned --tune-steps 10
    .venv/bin/python benchmarks/shapes_interpolate.py --variants tuned --inversion-strengths 1,0.3 --first-seed 9

Every clip (seeds below 1,000,000, 16 frames, paths linear/diagonal/arc/bounce in turn) loses every other frame:
frames 0, 2, ..., 14 are kept as 8 keyframes, frames 1, 3, ..., 13 are the truth the in-betweens are judged
against (frame 15 is never used). Each clip runs as one real ComfyUI graph on a headless server: TAV Load Demo
Model -> Load Video (the 8 keyframes) -> VAEEncode -> per variant Inflate UNet (-> One-Shot Tune on the keyframes
with the source caption) -> TAV Interpolate Frames (factor 1: 15 frames) -> VAEDecode -> SaveImage. The baselines
are sibling branches of stock nodes on the same keyframe latents: repeat = the previous keyframe (VAEDecode of
the keyframe latents), blend = Latent From Batch (keyframes 0-6 and 1-7) -> Latent Blend 0.5 -> VAEDecode, so
every row passes through the same VAE. An OpenCV judge scores the in-betweens: right object (colour, shape,
background), centroid error and area error against the dropped true frames, and how many objects it sees (a
blend of two positions can show two half objects). Prints markdown tables, writes them to --out and a contact
sheet (source frames 0-14, then every row's 15 frames) beside it.
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

from tav_dev.shapes_bench import Graph, add_shared_arguments, clip_inputs, mean  # noqa: E402

SOURCE_FRAMES = 16
CENTROID_TOLERANCE = 2.0  # px: an in-between "on the spot"
TARGETS = {"right_object": 0.95, "centroid_error": CENTROID_TOLERANCE}


@dataclass(frozen=True)
class Plan:
    tuned: bool
    temporal_conv: str = "none"


VARIANTS = {
    "untuned": Plan(tuned=False),
    "tuned": Plan(tuned=True),
    "tuned_pseudo3d": Plan(tuned=True, temporal_conv="pseudo3d"),
}
BASELINES = ("repeat", "blend")
METRICS = ("right_object", "object_found", "one_object", "two_or_more", "centroid_error", "area_error", "on_the_spot")


@dataclass(frozen=True)
class Settings:
    tune_steps: int
    learning_rate: float
    ddim_steps: int
    cfg: float
    resample: int  # TAV Interpolate Frames' RePaint jump-backs per step
    strengths: tuple[float, ...]  # its inversion_strength values: one row per variant and value


def row_name(variant: str, strength: float) -> str:
    """A variant's row at an inversion_strength: its own name at 1 (the node's default), name@strength below."""
    return variant if strength == 1.0 else f"{variant}@{strength:g}"


@dataclass(frozen=True)
class FrameScore:
    """One generated in-between against its dropped true frame."""

    right_object: bool  # judged colour, shape and background all those of the source
    object_found: bool  # the judge finds an object at all
    objects: int  # separate object-coloured regions of at least the judge's minimum area
    centroid_error: float  # px to the true frame's centroid (nan without an object)
    area_error: float  # |area - true area| / true area (nan without an object)

    @property
    def on_the_spot(self) -> bool:
        return self.right_object and self.centroid_error <= CENTROID_TOLERANCE


def split_frames(frames: int = SOURCE_FRAMES) -> tuple[list[int], list[int]]:
    """(keyframes, dropped): the source frames kept (0, 2, ...) and the ones between them that the x2
    interpolation must generate (1, 3, ...); with an even count the last frame has no keyframe after it."""
    keyframes = list(range(0, frames, 2)) if frames % 2 else list(range(0, frames - 1, 2))
    return keyframes, [index + 1 for index in keyframes[:-1]]


def inbetweens(output: np.ndarray) -> np.ndarray:
    """The generated frames of a factor-1 interpolation's output (keyframes at even positions)."""
    return output[1::2]


def repeat_inbetweens(keyframes: np.ndarray) -> np.ndarray:
    """The repeat baseline: each gap filled with the keyframe before it."""
    return keyframes[:-1]


def interleave(keyframes: np.ndarray, between: np.ndarray) -> np.ndarray:
    """Keyframes (K) and in-betweens (K-1) back into one clip of 2K-1 frames."""
    clip = np.empty((len(keyframes) + len(between), *keyframes.shape[1:]), keyframes.dtype)
    clip[0::2], clip[1::2] = keyframes, between
    return clip


def count_objects(frame: np.ndarray) -> int:
    """Separate regions unlike the background, as the judge finds them (same distance and minimum area)."""
    from comfyui_tune_a_video.shapes_demo.judge import MIN_AREA, unlike_background
    from comfyui_tune_a_video.tav_core.opencv import import_cv2

    cv2 = import_cv2()
    _, far = unlike_background(frame.astype(np.float64))
    count, _, stats, _ = cv2.connectedComponentsWithStats(far.astype(np.uint8), connectivity=8)
    return int((stats[1:count, cv2.CC_STAT_AREA] >= MIN_AREA).sum())


def score_frames(frames: np.ndarray, truth: np.ndarray, target: tuple[str, str, str]) -> list[FrameScore]:
    """frames, truth: (N, H, W, 3) RGB uint8, generated in-betweens and the dropped frames they stand for."""
    from comfyui_tune_a_video.shapes_demo.judge import judge

    scores = []
    for frame, true_frame in zip(frames, truth, strict=True):
        got, want = judge(frame), judge(true_frame)
        error = area = math.nan
        if got.centroid is not None and want.centroid is not None:
            error = math.hypot(got.centroid[0] - want.centroid[0], got.centroid[1] - want.centroid[1])
            area = abs(got.area - want.area) / want.area
        scores.append(FrameScore(got.matches(*target), got.centroid is not None, count_objects(frame), error, area))
    return scores


def summarise(scores: list[FrameScore]) -> dict[str, float]:
    """Fractions of frames (right object, object found, exactly one object, on the spot) and mean errors over
    the frames with an object."""
    if not scores:
        return {name: math.nan for name in METRICS}
    return {
        "right_object": float(np.mean([s.right_object for s in scores])),
        "object_found": float(np.mean([s.object_found for s in scores])),
        "one_object": float(np.mean([s.objects == 1 for s in scores])),
        "two_or_more": float(np.mean([s.objects >= 2 for s in scores])),
        "centroid_error": mean([s.centroid_error for s in scores]),
        "area_error": mean([s.area_error for s in scores]),
        "on_the_spot": float(np.mean([s.on_the_spot for s in scores])),
    }


def psnr(frames: np.ndarray, reference: np.ndarray) -> float:
    mse = float(np.mean((frames.astype(np.float64) - reference.astype(np.float64)) ** 2))
    return 10 * math.log10(255.0**2 / mse) if mse > 0 else math.inf


def clip_graph(video: str, caption: str, keyframes: int, variants: list[str], settings: Settings, seed: int):
    """One prompt for one clip; saves[row] is the SaveImage node of its frames ("keyframes": the keyframe
    latents decoded, "blend": the blended in-betweens, every variant: its whole interpolated clip)."""
    g = Graph()
    model, clip, vae, latents, empty, source = clip_inputs(g, video, caption)
    saves = {}

    def save(row: str, latent: list) -> None:
        decoded = g.add("VAEDecode", samples=latent, vae=vae)
        saves[row] = g.add("SaveImage", images=[decoded, 0], filename_prefix=f"{row}/frame")

    save("keyframes", latents)
    earlier = [g.add("LatentFromBatch", samples=latents, batch_index=0, length=keyframes - 1), 0]
    later = [g.add("LatentFromBatch", samples=latents, batch_index=1, length=keyframes - 1), 0]
    save("blend", [g.add("LatentBlend", samples1=earlier, samples2=later, blend_factor=0.5), 0])
    for variant in variants:
        plan = VARIANTS[variant]
        video_model = [g.add("TAV_InflateUNet", model=model, attention="sparse_causal", temporal_layers=True,
                             temporal_position_encoding="none", groupnorm="per_frame",
                             temporal_conv=plan.temporal_conv), 0]
        if plan.tuned:
            video_model = [g.add("TAV_OneShotTune", model=video_model, latents=latents, conditioning=source,
                                 steps=settings.tune_steps, learning_rate=settings.learning_rate, seed=seed,
                                 gradient_checkpointing="off", precision="auto", trainable="pack"), 0]
        for strength in settings.strengths:
            save(row_name(variant, strength), [g.add(
                "TAV_InterpolateFrames", model=video_model, keyframes=latents, positive=source, negative=empty,
                factor=1, mode="interpolate", steps=settings.ddim_steps, cfg=settings.cfg, seed=seed,
                resample=settings.resample, inversion_strength=strength), 0])
    return g.nodes, saves


def run(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """Runs the benchmark, prints and writes the report; returns the headline numbers per row."""
    from tav_dev.comfy_host import comfyui_path, setup_host

    setup_host()
    from comfyui_tune_a_video.shapes_demo.world import PATHS, random_clip
    from tav_dev.contact_sheet import read_frames, write_contact_sheet
    from tav_dev.headless_comfy import ComfyServer, history_error
    from tav_dev.shapes_clips import write_lossless_mp4

    settings = Settings(args.tune_steps, args.learning_rate, args.ddim_steps, args.cfg, args.resample,
                        args.inversion_strengths)
    variants = args.variants.split(",")
    generated = [row_name(variant, strength) for variant in variants for strength in settings.strengths]
    rows = [*BASELINES, *generated]
    kept, dropped = split_frames(SOURCE_FRAMES)
    scores = defaultdict(list)  # row -> [FrameScore], pooled over clips
    by_path = defaultdict(list)  # (row, path) -> [FrameScore]
    keyframe_psnr = defaultdict(list)  # row -> [dB of the output's keyframes against the source's]
    steps = []  # px from each dropped frame's true centroid to the keyframe before it: repeat's expected error
    sheet_rows: list[tuple[str, np.ndarray]] = []
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="tav-shapes-interpolate-"))
    started = time.monotonic()
    with ComfyServer(comfyui_path(), workdir) as server:
        for number in range(args.clips):
            seed = args.first_seed + number
            path = PATHS[number % len(PATHS)]
            clip = random_clip(seed, frames=SOURCE_FRAMES, path=path)
            scene = clip.scenes[0]
            steps += list(np.linalg.norm(clip.centroids[dropped] - clip.centroids[kept[:-1]], axis=1))
            target = (scene.colour, scene.shape, scene.background)
            video = f"keyframes_{seed}.mp4"
            write_lossless_mp4(server.input_dir / video, clip.frames[kept])
            prompt, saves = clip_graph(video, clip.caption, len(kept), variants, settings, seed)
            clip_started = time.monotonic()
            history = server.run_prompt(prompt, timeout=3600)
            if history["status"].get("status_str") != "success":
                raise RuntimeError(f"clip {seed}: {history_error(history)}\n{server.log()[-3000:]}")
            decoded_keys = read_frames(server.output_files(history, saves["keyframes"]))
            whole = {"repeat": interleave(decoded_keys, repeat_inbetweens(decoded_keys)),
                     "blend": interleave(decoded_keys, read_frames(server.output_files(history, saves["blend"])))}
            whole |= {row: read_frames(server.output_files(history, saves[row])) for row in generated}
            if number == 0:
                sheet_rows.append((f"source, frames 0-{2 * len(kept) - 2}: {clip.caption}",
                                   clip.frames[: 2 * len(kept) - 1]))
            for row in rows:
                frame_scores = score_frames(inbetweens(whole[row]), clip.frames[dropped], target)
                scores[row] += frame_scores
                by_path[row, path] += frame_scores
                keyframe_psnr[row].append(psnr(whole[row][0::2], clip.frames[kept]))
                if number == 0:
                    sheet_rows.append((row, whole[row]))
            print(f"[shapes_interpolate] clip {number + 1}/{args.clips}: {clip.caption} ({path}), "
                  f"{time.monotonic() - clip_started:.0f} s", flush=True)
    summary = {row: {**summarise(scores[row]), "keyframe_psnr": mean(keyframe_psnr[row])} for row in rows}
    paths = [p for p in PATHS if any(by_path[row, p] for row in rows)]
    per_path = {row: {p: summarise(by_path[row, p])["centroid_error"] for p in paths} for row in rows}
    report = format_report(summary, per_path, float(np.mean(steps)), settings, args, time.monotonic() - started)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report)
    write_contact_sheet(out.with_suffix(".png"), sheet_rows, f"shapes_interpolate, clip seed {args.first_seed}",
                        scale=1)
    print(report)
    print(f"[shapes_interpolate] wrote {out} and {out.with_suffix('.png')}")
    return summary


def fmt(value: float, digits: int = 3) -> str:
    return "-" if math.isnan(value) else f"{value:.{digits}f}"


def format_report(summary: dict[str, dict[str, float]], per_path: dict[str, dict[str, float]], step: float,
                  settings: Settings, args, seconds: float) -> str:
    kept, dropped = split_frames(SOURCE_FRAMES)
    lines = [
        "# Shapes-world frame interpolation benchmark",
        "",
        f"{args.clips} clips of {SOURCE_FRAMES} frames at 64x64 (seeds {args.first_seed}-"
        f"{args.first_seed + args.clips - 1}, paths linear/diagonal/arc/bounce in turn); {len(kept)} keyframes "
        f"(frames {kept[0]}, {kept[1]}, ..., {kept[-1]}) interpolated x2 to {2 * len(kept) - 1} frames, "
        f"{len(dropped)} in-betweens per clip judged against the dropped frames {dropped[0]}, {dropped[1]}, ..., "
        f"{dropped[-1]}. One-Shot Tune {settings.tune_steps} steps at lr {settings.learning_rate:g} on the keyframes "
        f"with the source caption; TAV Interpolate Frames DDIM {settings.ddim_steps} steps, cfg {settings.cfg:g}, "
        f"resample {settings.resample}, inversion_strength {', '.join(f'{v:g}' for v in settings.strengths)}, "
        f"source caption / empty negative; {seconds / 60:.1f} min. The true centroid "
        f"moves {step:.2f} px on average from a keyframe to the dropped frame after it (the repeat row's expected "
        f"centroid error, beside the target's {CENTROID_TOLERANCE:g} px). "
        f"Command: `{' '.join(['python'] + sys.argv)}`",
        "",
        "| row | right object | object found | one object | two+ objects | centroid error (px) | area error | "
        f"right and <= {CENTROID_TOLERANCE:g} px | keyframe PSNR (dB) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row, values in summary.items():
        lines.append(
            f"| {row} | {fmt(values['right_object'])} | {fmt(values['object_found'])} | {fmt(values['one_object'])} | "
            f"{fmt(values['two_or_more'])} | {fmt(values['centroid_error'], 2)} | {fmt(values['area_error'])} | "
            f"{fmt(values['on_the_spot'])} | {fmt(values['keyframe_psnr'], 2)} |"
        )
    paths = list(next(iter(per_path.values()))) if per_path else []
    lines += ["", "Centroid error by path (px):", "", "| row | " + " | ".join(paths) + " |",
              "| --- |" + " --- |" * len(paths)]
    for row, errors in per_path.items():
        lines.append(f"| {row} | " + " | ".join(fmt(errors[p], 2) for p in paths) + " |")
    lines += ["", "Rows: repeat = each in-between is the keyframe before it (the keyframe latents through the demo "
              "VAE); blend = the mean of the two neighbouring keyframes' latents (stock Latent From Batch and Latent "
              "Blend 0.5), decoded; untuned = Inflate UNet (sparse-causal attention, temporal layers, per-frame "
              "GroupNorm) -> TAV Interpolate Frames; tuned = the same One-Shot Tune'd on the 8 keyframes first; "
              "tuned_pseudo3d = Inflate UNet with temporal_conv pseudo3d, tuned, interpolated; a row's @s = "
              "TAV Interpolate Frames at inversion_strength s (the new frames start from the keyframe blend noised "
              "to that level), no @ = 1.", "",
              "Metrics, over every generated in-between of every clip: right object = the judged colour, shape and "
              "background are the source's; object found = the judge finds an object; one object / two+ objects = "
              "separate object regions the judge's threshold finds (a blend of two positions may show two half "
              "objects, one merged blob, or nothing the threshold sees); centroid error = distance of the judged "
              "centroid to the dropped true frame's, and area error = |area - true area| / true area, both over "
              "frames with an object (the demo VAE's round trip alone moves the judged area: the repeat row's area "
              "error is all VAE); right and <= 2 px = both at once (the stricter reading of the target); "
              "keyframe PSNR = the output's keyframes against the source keyframes (the VAE's round trip for the "
              "baselines).", ""]
    lines += ["Targets:", *target_checks(summary), ""]
    return "\n".join(lines)


def target_checks(summary: dict[str, dict[str, float]]) -> list[str]:
    def verdict(ok: bool) -> str:
        return "met" if ok else "NOT met"

    checks = []
    tuned_rows = [row for row in summary if row == "tuned" or row.startswith("tuned@")]
    if not tuned_rows:
        checks.append("- tuned was not run: no verdict")
    for row in tuned_rows:
        values = summary[row]
        right, error, spot = values["right_object"], values["centroid_error"], values["on_the_spot"]
        checks += [
            f"- {row} in-betweens right object {fmt(right)} (>= {TARGETS['right_object']}): "
            f"{verdict(right >= TARGETS['right_object'])}",
            f"- {row} centroid error {fmt(error, 2)} px (<= {TARGETS['centroid_error']:g}): "
            f"{verdict(error <= TARGETS['centroid_error'])}",
            f"- {row} in-betweens right and within {CENTROID_TOLERANCE:g} px {fmt(spot)} (>= "
            f"{TARGETS['right_object']}, the stricter reading): {verdict(spot >= TARGETS['right_object'])}",
        ]
        for baseline in BASELINES:
            other = summary[baseline]["centroid_error"]
            checks.append(f"- {row} centroid error below {baseline}'s ({fmt(error, 2)} vs {fmt(other, 2)} px): "
                          f"{verdict(error < other or (math.isnan(other) and not math.isnan(error)))}")
    blend = summary["blend"]
    checks.append(f"- as judged, the blend's in-betweens show two or more objects in {fmt(blend['two_or_more'])}, "
                  f"one in {fmt(blend['one_object'])}, none in {fmt(1 - blend['one_object'] - blend['two_or_more'])} "
                  f"of frames (right object {fmt(blend['right_object'])}, area error {fmt(blend['area_error'])})")
    return checks


def strength_list(text: str) -> tuple[float, ...]:
    values = tuple(float(part) for part in text.split(","))
    if not all(0.01 <= value <= 1.0 for value in values) or len(set(values)) != len(values):
        raise argparse.ArgumentTypeError(f"{text!r}: distinct values in 0.01 .. 1")
    return values


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_shared_arguments(parser, list(VARIANTS), "shapes_interpolate.md")
    parser.add_argument("--resample", type=int, default=0, help="TAV Interpolate Frames' RePaint jump-backs per step")
    parser.add_argument("--inversion-strengths", type=strength_list, default=(1.0,),
                        help="TAV Interpolate Frames' inversion_strength, comma-separated (one row per variant and "
                        "value, all from the same tuned model): e.g. 1,0.5")
    args = parser.parse_args(argv)
    unknown = set(args.variants.split(",")) - set(VARIANTS)
    if unknown:
        parser.error(f"unknown variants: {sorted(unknown)}")
    if not (0 <= args.first_seed and args.first_seed + args.clips <= 1_000_000):
        parser.error("clip seeds must lie below 1,000,000 (tools/train_demo_motion.py draws its clips above)")
    return run(args)


if __name__ == "__main__":
    main()
