"""What the shapes-world benchmarks share: API-format prompts built node by node, the nodes every clip's graph
starts from, the edits drawn for a clip, their common command-line options, and a mean that skips what could
not be measured."""

import argparse
import math
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .demo_gate import GATE_CFG

REPO = Path(__file__).resolve().parents[2]


class Graph:
    """An API-format prompt built node by node."""

    def __init__(self) -> None:
        self.nodes: dict[str, dict] = {}

    def add(self, class_type: str, **inputs) -> str:
        node_id = str(len(self.nodes) + 1)
        self.nodes[node_id] = {"class_type": class_type, "inputs": inputs}
        return node_id


class ClipInputs(NamedTuple):
    """Links ([node id, output index]) to what every clip's graph starts from."""

    model: list
    clip: list
    vae: list
    latents: list  # the clip's frames, VAE-encoded
    empty: list  # the empty prompt
    source: list  # the clip's caption


def clip_inputs(g: Graph, video: str, caption: str) -> ClipInputs:
    """TAV Load Demo Model, the video loaded and encoded, and the empty and source prompts."""
    demo = g.add("TAV_LoadDemoModel")
    model, clip, vae = [demo, 0], [demo, 1], [demo, 2]
    frames = g.add("GetVideoComponents", video=[g.add("LoadVideo", file=video), 0])
    latents = [g.add("VAEEncode", pixels=[frames, 0], vae=vae), 0]
    empty = [g.add("CLIPTextEncode", clip=clip, text=""), 0]
    source = [g.add("CLIPTextEncode", clip=clip, text=caption), 0]
    return ClipInputs(model, clip, vae, latents, empty, source)


def add_shared_arguments(parser: argparse.ArgumentParser, variants: list[str], report: str) -> None:
    """The options every shapes benchmark takes: clips, variants, tuning and sampling settings, where to write."""
    parser.add_argument("--clips", type=int, default=8)
    parser.add_argument("--first-seed", type=int, default=1)
    parser.add_argument("--variants", default=",".join(variants))
    parser.add_argument("--tune-steps", type=int, default=300)
    parser.add_argument("--learning-rate", type=float, default=3e-4)
    parser.add_argument("--ddim-steps", type=int, default=25)
    parser.add_argument("--cfg", type=float, default=GATE_CFG, help="guidance (default: the demo model's)")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / report))
    parser.add_argument("--workdir", default="", help="ComfyUI's base folder for the run (default: a temp folder)")


def edit_targets(scene, seed: int) -> dict[str, tuple[str, str, str]]:
    """The source's (colour, shape, background) and one edit of each kind, drawn from the clip's seed."""
    from comfyui_tune_a_video.shapes_demo.world import BACKGROUNDS, COLOURS, SHAPES

    rng = np.random.default_rng(10_000 + seed)

    def other(options, current: str, avoid: str = "") -> str:
        return str(rng.choice([o for o in options if o not in (current, avoid)]))

    background = other(BACKGROUNDS, scene.background, scene.colour)
    shape = other(SHAPES, scene.shape)
    return {
        "source": (scene.colour, scene.shape, scene.background),
        "colour": (other(COLOURS, scene.colour, scene.background), scene.shape, scene.background),
        "shape": (scene.colour, shape, scene.background),
        "background": (scene.colour, scene.shape, background),
        "all": (other(COLOURS, scene.colour, background), shape, background),
    }


def mean(values) -> float:
    values = [v for v in values if not math.isnan(v)]
    return float(np.mean(values)) if values else math.nan
