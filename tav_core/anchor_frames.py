"""The clip's frame 0 for windows that do not hold it.

Sparse-causal attention lets every frame read frame 0's keys and values; a window that starts later would read
its own first frame instead, and appearance could drift from window to window. While the window holding frame
0 runs, each layer records that frame's keys and values; every later window's layers read the recording.
"""

import torch

LayerKey = tuple  # ComfyUI's patch key of a transformer block: (block name, block id, index)


class AnchorFrames:
    """Frame 0's projected keys and values per layer, (videos, tokens, channels) each."""

    def __init__(self) -> None:
        self.recording = True
        self.recorded: dict[LayerKey, tuple[torch.Tensor, torch.Tensor]] = {}

    def first_frames(
        self, layer: LayerKey, k: torch.Tensor, v: torch.Tensor, videos: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Frame 0's keys and values for this layer: this window's own while recording, else the recording."""
        if self.recording:
            bf, n, c = k.shape
            first = (k.view(videos, bf // videos, n, c)[:, 0], v.view(videos, bf // videos, n, c)[:, 0])
            self.recorded[layer] = first
            return first
        if layer not in self.recorded:
            raise RuntimeError(f"Tune-A-Video: no frame-0 keys were recorded for the transformer block {layer}")
        k0, v0 = self.recorded[layer]
        if k0.shape[0] != videos:
            raise RuntimeError(
                f"Tune-A-Video: frame 0 was recorded for {k0.shape[0]} videos, but this window holds {videos}"
            )
        return k0, v0
