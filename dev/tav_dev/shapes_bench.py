"""What the shapes-world benchmarks share: API-format prompts built node by node, the edits drawn for a clip,
and a mean that skips what could not be measured."""

import math

import numpy as np


class Graph:
    """An API-format prompt built node by node."""

    def __init__(self) -> None:
        self.nodes: dict[str, dict] = {}

    def add(self, class_type: str, **inputs) -> str:
        node_id = str(len(self.nodes) + 1)
        self.nodes[node_id] = {"class_type": class_type, "inputs": inputs}
        return node_id


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
