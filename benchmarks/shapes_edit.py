"""Does Tune-A-Video work, and does each part of it matter? Measured on the demo model's shapes world.

    .venv/bin/python benchmarks/shapes_edit.py                  # 8 clips x 4 edits x 7 variants (~20 min, 2 cores)
    .venv/bin/python benchmarks/shapes_edit.py --clips 1 --edits shape --variants full,per_frame_t2i --tune-steps 10

Every clip runs as one real ComfyUI graph on a headless server (TAV Load Demo Model -> Load Video ->
VAEEncode -> Inflate UNet -> One-Shot Tune -> DDIM Invert Video -> TAV Sample -> VAEDecode -> SaveImage,
with the ablations as sibling branches), then an OpenCV judge scores the saved frames. Prints markdown
tables, writes them to --out and a contact sheet (source row, one row per variant, per edit) beside it.
"""

import argparse
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]

from tav_dev.shapes_bench import Graph, add_shared_arguments, clip_inputs, edit_targets, mean  # noqa: E402


@dataclass(frozen=True)
class Plan:
    attention: str = "sparse_causal"
    temporal_layers: bool = True
    groupnorm: str = "per_frame"  # Inflate UNet's default; "per_video" pools over frames as the reference
    tuned: bool = True
    inverted: bool = True
    negative: str = "empty"  # the paper's empty negative prompt, or "source": the source caption
    trainable: str = "pack"  # One-Shot Tune's trainable: "reference" trains and initialises as the original code
    temporal_conv: str = "none"  # Inflate UNet's temporal_conv: "pseudo3d" adds Make-A-Video's 1D convolutions
    tune_window: int = 0  # One-Shot Tune's window (0: every frame each step)
    window_anchor: str = "window"  # One-Shot Tune's window_anchor
    sample_window: int = 0  # DDIM Invert Video's and TAV Sample's window (0: the whole clip)
    overlap: int = 4  # their overlap, with a sample_window
    rank: int = 0  # One-Shot Tune's rank (to_q LoRAs; 0: full-rank deltas)
    temporal_rank: int = 0  # One-Shot Tune's temporal_rank (temporal matrices as LoRAs; 0: whole)


VARIANTS = {  # None: no inflation at all, every frame sampled alone from fresh noise
    "full": Plan(),
    "full_source_negative": Plan(negative="source"),
    "no_tuning": Plan(tuned=False),
    "no_inversion": Plan(inverted=False),
    "full_attention": Plan(attention="full"),
    "no_temporal_layers": Plan(temporal_layers=False),
    "per_video_groupnorm": Plan(groupnorm="per_video"),
    "reference_exact": Plan(groupnorm="per_video", trainable="reference"),  # the original code's UNet and tuning
    "pseudo3d": Plan(temporal_conv="pseudo3d"),  # full, plus a tuned temporal convolution after every ResBlock conv
    # Long clips (run with --frames 48): tuned, inverted and sampled in windows, overlap 4
    "window16_clip": Plan(tune_window=16, window_anchor="clip", sample_window=16),
    "window16_window": Plan(tune_window=16, window_anchor="window", sample_window=16),
    "window8_clip": Plan(tune_window=8, window_anchor="clip", sample_window=8),
    "window8_window": Plan(tune_window=8, window_anchor="window", sample_window=8),
    # Low rank (the demo model's to_q and temporal matrices are 64 and 128 wide; SD1.5's 320-1280)
    "rank32": Plan(rank=32),
    "rank8": Plan(rank=8),
    "rank8_temporal8": Plan(rank=8, temporal_rank=8),
    "per_frame_t2i": None,
}
EDITS = ("colour", "shape", "background", "all")
METRICS = ("text_alignment", "motion_error", "object_found", "consistency", "area_change", "end_drift")
TARGETS = {"text_alignment": 0.90, "motion_error": 3.0, "per_frame_motion_ratio": 3.0}


@dataclass(frozen=True)
class Settings:
    frames: int
    tune_steps: int
    learning_rate: float
    ddim_steps: int
    cfg: float
    inversion_strength: float


def clip_graph(video: str, caption: str, targets: dict, variants: list[str], settings: Settings, seed: int):
    """One prompt for one clip: every variant and edit, sharing the nodes they have in common."""
    from comfyui_tune_a_video.shapes_demo.world import caption as make_caption

    g = Graph()
    model, clip, vae, latents, empty, source = clip_inputs(g, video, caption)
    prompts = {kind: [g.add("CLIPTextEncode", clip=clip, text=make_caption(*target)), 0]
               for kind, target in targets.items()}
    fresh = [g.add("EmptyLatentImage", width=64, height=64, batch_size=settings.frames), 0]
    saves, tuned, inverted = {}, {}, {}
    for variant in variants:
        plan = VARIANTS[variant]
        for kind, prompt in prompts.items():
            if plan is None:
                sampled = g.add("KSampler", model=model, seed=seed, steps=settings.ddim_steps, cfg=settings.cfg,
                                sampler_name="ddim", scheduler="ddim_uniform", positive=prompt, negative=empty,
                                latent_image=fresh, denoise=1.0)
            else:
                key = (plan.attention, plan.temporal_layers, plan.groupnorm, plan.tuned, plan.trainable,
                       plan.temporal_conv, plan.tune_window, plan.window_anchor, plan.rank, plan.temporal_rank)
                windows = {"window": plan.sample_window, "overlap": plan.overlap}
                if key not in tuned:
                    video_model = [g.add("TAV_InflateUNet", model=model, attention=plan.attention,
                                         temporal_layers=plan.temporal_layers, temporal_position_encoding="none",
                                         groupnorm=plan.groupnorm, temporal_conv=plan.temporal_conv), 0]
                    if plan.tuned:
                        video_model = [g.add("TAV_OneShotTune", model=video_model, latents=latents,
                                             conditioning=source, steps=settings.tune_steps,
                                             learning_rate=settings.learning_rate, seed=seed,
                                             gradient_checkpointing="off", precision="auto",
                                             trainable=plan.trainable, window=plan.tune_window,
                                             window_anchor=plan.window_anchor, rank=plan.rank,
                                             temporal_rank=plan.temporal_rank), 0]
                    tuned[key] = video_model
                if plan.inverted and (key, plan.sample_window) not in inverted:
                    inverted[key, plan.sample_window] = [
                        g.add("TAV_DDIMInvertVideo", model=tuned[key], latents=latents, conditioning=empty,
                              steps=settings.ddim_steps, inversion_strength=settings.inversion_strength, **windows), 0]
                sampled = g.add("TAV_Sample", model=tuned[key], positive=prompt,
                                negative=source if plan.negative == "source" else empty,
                                latent=inverted[key, plan.sample_window] if plan.inverted else fresh,
                                steps=settings.ddim_steps, cfg=settings.cfg, eta=0.0, seed=seed, **windows)
            decoded = g.add("VAEDecode", samples=[sampled, 0], vae=vae)
            saves[variant, kind] = g.add("SaveImage", images=[decoded, 0], filename_prefix=f"{variant}/{kind}/frame")
    return g.nodes, saves


def run(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """Runs the benchmark, prints and writes the report; returns the headline numbers per variant."""
    from tav_dev.comfy_host import comfyui_path, setup_host

    setup_host()
    from comfyui_tune_a_video.shapes_demo.metrics import score_edit
    from comfyui_tune_a_video.shapes_demo.world import PATHS, random_clip
    from tav_dev.contact_sheet import read_frames, write_contact_sheet
    from tav_dev.headless_comfy import ComfyServer, history_error
    from tav_dev.shapes_clips import write_lossless_mp4

    settings = Settings(args.frames, args.tune_steps, args.learning_rate, args.ddim_steps, args.cfg,
                        args.inversion_strength)
    variants, edits = args.variants.split(","), args.edits.split(",")
    scores = defaultdict(list)  # (variant, kind) -> [EditScore]
    sheet_rows: list[tuple[str, np.ndarray]] = []  # the first clip: source, then every edit by every variant
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="tav-shapes-edit-"))
    started = time.monotonic()
    with ComfyServer(comfyui_path(), workdir) as server:
        for number in range(args.clips):
            seed = args.first_seed + number
            clip = random_clip(seed, frames=args.frames, path=PATHS[number % len(PATHS)])
            video = f"clip_{seed}.mp4"
            write_lossless_mp4(server.input_dir / video, clip.frames)
            targets = {kind: target for kind, target in edit_targets(clip.scenes[0], seed).items()
                       if kind == "source" or kind in edits}
            prompt, saves = clip_graph(video, clip.caption, targets, variants, settings, seed)
            clip_started = time.monotonic()
            history = server.run_prompt(prompt, timeout=3600)
            if history["status"].get("status_str") != "success":
                raise RuntimeError(f"clip {seed}: {history_error(history)}\n{server.log()[-3000:]}")
            if number == 0:
                sheet_rows.append((f"source: {clip.caption}", clip.frames))
            for (variant, kind), node in sorted(saves.items(), key=lambda item: list(targets).index(item[0][1])):
                frames = read_frames(server.output_files(history, node))
                scores[variant, kind].append(score_edit(frames, clip.frames, targets[kind]))
                if number == 0 and kind != "source":
                    sheet_rows.append((f"{kind}: {variant}", frames))
            print(f"[shapes_edit] clip {number + 1}/{args.clips}: {clip.caption}, "
                  f"{time.monotonic() - clip_started:.0f} s", flush=True)
    summary = {variant: averages(scores, variant, edits) for variant in variants}
    report = format_report(scores, summary, edits, settings, args, time.monotonic() - started)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report)
    write_contact_sheet(out.with_suffix(".png"), sheet_rows, f"shapes_edit, clip seed {args.first_seed}", scale=1)
    print(report)
    print(f"[shapes_edit] wrote {out} and {out.with_suffix('.png')}")
    return summary


def averages(scores, variant: str, kinds: list[str]) -> dict[str, float]:
    """Mean of each metric over the variant's edits of these kinds (NaNs skipped), and its reconstruction PSNR."""
    edited = [score for kind in kinds for score in scores[variant, kind]]
    result = {name: mean([getattr(score, name) for score in edited]) for name in METRICS}
    result["recon_psnr"] = mean([score.psnr for score in scores[variant, "source"]])
    return result


def format_report(scores, summary: dict[str, dict[str, float]], edits, settings: Settings, args,
                  seconds: float) -> str:
    lines = [
        "# Shapes-world edit benchmark",
        "",
        f"{args.clips} clips x {len(edits)} edits ({', '.join(edits)}), {settings.frames} frames at 64x64; "
        f"One-Shot Tune {settings.tune_steps} steps at lr {settings.learning_rate:g}; DDIM {settings.ddim_steps} "
        f"steps, cfg {settings.cfg:g}, inversion strength {settings.inversion_strength:g}; {seconds / 60:.1f} min. "
        f"Command: `{' '.join(['python'] + sys.argv)}`",
        "",
        "| variant | text alignment | motion error (px) | object found | consistency | area change | "
        "end drift | recon PSNR (dB) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for variant, row in summary.items():
        lines.append(
            f"| {variant} | {row['text_alignment']:.3f} | {row['motion_error']:.2f} | {row['object_found']:.3f} | "
            f"{row['consistency']:.3f} | {row['area_change']:.3f} | {row['end_drift']:.3f} | {row['recon_psnr']:.2f} |"
        )
    lines += ["", "Per edit kind (text alignment / motion error px):", "",
              "| variant | " + " | ".join(edits) + " |", "| --- |" + " --- |" * len(edits)]
    for variant in summary:
        cells = [f"{row['text_alignment']:.2f} / {row['motion_error']:.1f}"
                 for row in (averages(scores, variant, [kind]) for kind in edits)]
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    lines += ["", "Variants: full = Inflate UNet (sparse-causal attention, temporal layers, per-frame GroupNorm) "
              "-> One-Shot Tune -> DDIM Invert Video (empty prompt) -> TAV Sample (empty negative prompt), as the "
              "paper; full_source_negative = the same with the source caption as TAV Sample's negative prompt; "
              "no_tuning skips One-Shot Tune; no_inversion samples the tuned model from fresh noise; full_attention, "
              "no_temporal_layers and per_video_groupnorm (statistics pooled over the frames, as the reference's 3D "
              "ResNet blocks) change Inflate UNet; reference_exact is per_video_groupnorm tuned with One-Shot Tune's "
              "trainable reference (norm_temp frozen, nn.Linear's output bias init), as the original code; "
              "pseudo3d is full with Inflate UNet's temporal_conv pseudo3d (Make-A-Video's identity-initialised "
              "1D convolution over the frames after every ResBlock 3x3 convolution, tuned beside the rest); "
              "windowN_clip / windowN_window are full for long clips: One-Shot Tune window N (window_anchor clip: "
              "a later window reads the clip's frame 0; window: its own first frame), DDIM Invert Video and TAV "
              "Sample window N with overlap 4 (always anchored on the clip's frame 0); "
              "rankN is full with One-Shot Tune's rank N (a LoRA of rank N per to_q instead of full-rank deltas), "
              "rankN_temporalM adds temporal_rank M (the temporal layers' matrices as LoRAs of rank M); "
              "per_frame_t2i samples every frame alone from fresh noise with the stock KSampler (no inflation).", "",
              "Metrics: text alignment = frames whose judged colour, shape and background all match the edit "
              "prompt; motion error = mean distance of the object's centroid to the source's, over frames where "
              "both show an object (frames without one count against text alignment and object found); "
              "consistency = consecutive frame pairs showing the same judged object; area change = mean relative "
              "area change between consecutive frames; end drift = last-quarter frames whose judged object or "
              "background is not frame 0's; recon PSNR = the source caption sampled back from the "
              "inversion, against the source frames.", ""]
    if "full" in summary:
        full_align, full_motion = summary["full"]["text_alignment"], summary["full"]["motion_error"]
        checks = [f"- full text alignment {full_align:.3f} (target >= {TARGETS['text_alignment']}): "
                  f"{'met' if full_align >= TARGETS['text_alignment'] else 'NOT met'}",
                  f"- full motion error {full_motion:.2f} px (target <= {TARGETS['motion_error']}): "
                  f"{'met' if full_motion <= TARGETS['motion_error'] else 'NOT met'}"]
        if "per_frame_t2i" in summary:
            ratio = summary["per_frame_t2i"]["motion_error"] / full_motion
            checks.append(f"- per-frame T2I motion error / full: {ratio:.1f}x (target >= "
                          f"{TARGETS['per_frame_motion_ratio']}): "
                          f"{'met' if ratio >= TARGETS['per_frame_motion_ratio'] else 'NOT met'}")
        lines += ["Targets:", *checks, ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_shared_arguments(parser, list(VARIANTS), "shapes_edit.md")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--edits", default=",".join(EDITS))
    parser.add_argument("--inversion-strength", type=float, default=1.0)
    args = parser.parse_args(argv)
    unknown = set(args.variants.split(",")) - set(VARIANTS) | set(args.edits.split(",")) - set(EDITS)
    if unknown:
        parser.error(f"unknown variants/edits: {sorted(unknown)}")
    return run(args)


if __name__ == "__main__":
    main()
