"""Forecast of a tuning step's peak memory under each gradient-checkpointing scope, from two probes.

A probe (comfy_glue.memory_probe) counts what autograd saves for backward in one forward, per UNet layer.
Every scope's saved bytes follow from that count, and all of them grow linearly with the frames (each frame
is a batch item; SDPA keeps no attention matrix), so probes on 1 and 2 frames predict any number of frames.
"""

from dataclasses import dataclass

from .tuning import CheckpointScope

FASTEST_FIRST = (CheckpointScope.OFF, CheckpointScope.TRANSFORMERS, CheckpointScope.BLOCKS)


@dataclass(frozen=True)
class SavedBytes:
    """What autograd saved for backward in one grad-enabled forward of the UNet on `frames` frames."""

    frames: int
    per_layer: tuple[int, ...]  # saved while each site layer ran (all nested in it included), in run order
    kinds: tuple[bool, ...]  # True for a spatial transformer, False for a ResNet block
    layer_inputs: tuple[int, ...]  # the layer's tensor inputs: what non-reentrant checkpointing keeps of it
    outside: int  # saved outside every site layer


def scope_bytes(saved: SavedBytes, scope: CheckpointScope) -> int:
    """Activation bytes a step keeps with `scope`: a checkpointed layer keeps its inputs, and during backward one
    checkpointed layer at a time holds its recomputed activations again (the largest one sets the peak)."""
    if scope == CheckpointScope.OFF:
        return sum(saved.per_layer) + saved.outside
    every_layer = scope == CheckpointScope.BLOCKS
    recomputed = {index for index, transformer in enumerate(saved.kinds) if transformer or every_layer}
    kept = sum(nbytes for index, nbytes in enumerate(saved.per_layer) if index not in recomputed)
    inputs = sum(saved.layer_inputs[index] for index in recomputed)
    largest = max((saved.per_layer[index] for index in recomputed), default=0)
    return kept + saved.outside + inputs + largest


def forecast_peaks(one: SavedBytes, two: SavedBytes, frames: int, optimizer_bytes: int) -> dict[CheckpointScope, int]:
    """Predicted peak bytes of a step on `frames` frames beyond what is resident already, for every scope.

    Each scope's bytes are fitted as fixed + per_frame * frames through the two probes (on 1 and 2 frames:
    fixed = 2 * p1 - p2, never below 0). optimizer_bytes: the trained parameters' gradients and AdamW moments,
    which exist at the step's peak (the end of backward) from the first step on.
    """
    if two.frames <= one.frames:
        raise ValueError(f"the second probe needs more frames than the first: {one.frames}, then {two.frames}")
    peaks = {}
    for scope in FASTEST_FIRST:
        first, second = scope_bytes(one, scope), scope_bytes(two, scope)
        per_frame = (second - first) / (two.frames - one.frames)
        fixed = max(0.0, first - per_frame * one.frames)
        peaks[scope] = round(fixed + per_frame * frames) + optimizer_bytes
    return peaks


def pick_scope(peaks: dict[CheckpointScope, int], free_bytes: int, margin: float = 0.2) -> tuple[CheckpointScope, str]:
    """The fastest scope whose predicted peak fits in free_bytes less the margin (the forecast leaves out backward's
    temporaries and the allocator's fragmentation), else BLOCKS, the least memory; with a line for the progress bar.
    """
    budget = free_bytes * (1 - margin)
    for scope in FASTEST_FIRST:
        if peaks[scope] <= budget:
            return scope, f"auto: {scope.value} (predicted {readable(peaks[scope])} of {readable(free_bytes)} free)"
    blocks = CheckpointScope.BLOCKS
    predicted = readable(peaks[blocks])
    return blocks, f"auto: {blocks.value} (predicted {predicted}, more than the {readable(free_bytes)} free)"


def readable(nbytes: float) -> str:
    """GiB from 1 GiB on, MiB below (a small model's forecast would read 0.0 GiB)."""
    if nbytes >= 2**30:
        return f"{nbytes / 2**30:.1f} GiB"
    return f"{nbytes / 2**20:.1f} MiB"
