"""What a window of a long clip cannot see itself: the clip's frame 0, and the frame just before its first.

Sparse-causal attention lets every frame read frame 0's keys and values and its previous frame's. A window that
starts later would read its own first frame as frame 0, and its first frame would read itself as its previous,
so appearance could drift from window to window. While the window holding frame 0 runs, each layer records that
frame's keys and values; every later window's layers read the recording. Windows run in order, and each records
the frame the next window's first frame follows, which lies inside it (windows overlap or touch), so that frame
reads its true previous frame too.
"""

import torch

LayerKey = tuple  # ComfyUI's patch key of a transformer block: (block name, block id, index)
KeysValues = tuple[torch.Tensor, torch.Tensor]  # (videos, tokens, channels) each


def frame_of(k: torch.Tensor, v: torch.Tensor, videos: int, index: int) -> KeysValues:
    """One frame's keys and values from a (videos*frames, tokens, channels) batch, copied: a view would keep the
    whole window's keys and values of every layer alive for as long as the recording is kept."""
    bf, n, c = k.shape
    return k.view(videos, bf // videos, n, c)[:, index].clone(), v.view(videos, bf // videos, n, c)[:, index].clone()


class AnchorFrames:
    """Frame 0's projected keys and values per layer, and the frame before the running window's first."""

    def __init__(self, carry_at: int | None = None) -> None:
        self.recording = True
        self.recorded: dict[LayerKey, KeysValues] = {}
        self.carry_at = carry_at  # the frame (index in the running window) the next window's first frame follows
        self.carried: dict[LayerKey, KeysValues] = {}
        self.before: dict[LayerKey, KeysValues] = {}  # the frame before the running window's first frame

    def first_frames(self, layer: LayerKey, k: torch.Tensor, v: torch.Tensor, videos: int) -> KeysValues:
        """Frame 0's keys and values for this layer: this window's own while recording, else the recording."""
        if self.recording:
            self.recorded[layer] = frame_of(k, v, videos, 0)
            return self.recorded[layer]
        if layer not in self.recorded:
            raise RuntimeError(f"Tune-A-Video: no frame-0 keys were recorded for the transformer block {layer}")
        k0, v0 = self.recorded[layer]
        if k0.shape[0] != videos:
            raise RuntimeError(
                f"Tune-A-Video: frame 0 was recorded for {k0.shape[0]} videos, but this window holds {videos}"
            )
        return k0, v0

    def previous_frames(self, layer: LayerKey, k: torch.Tensor, v: torch.Tensor, videos: int) -> KeysValues | None:
        """The keys and values of the frame before this window's first frame (None: the window starts the clip, or
        nothing was carried to it); keeps this window's frame carry_at for the next window."""
        if self.carry_at is not None:
            self.carried[layer] = frame_of(k, v, videos, self.carry_at)
        return self.before.get(layer)

    def next_window(self, carry_at: int | None) -> None:
        """Between two windows: frame 0 is recorded, what this window carried is the next one's frame before."""
        self.recording = False
        self.before, self.carried = self.carried, {}
        self.carry_at = carry_at
