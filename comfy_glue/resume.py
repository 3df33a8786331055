"""Resuming a tune (One-Shot Tune's resume_from): the weights it continues from must come from this very setup,
and they are where every trainable part starts.

The optimiser's moments are not in a tuned-weights file, so AdamW starts afresh; the random draws (timestep and
noise per step) go on from the step the weights were saved at, so a resumed tune sees the steps a longer tune
would have seen.
"""

import torch
from torch import nn

from ..tav_core.errors import TAVInputError
from ..tav_core.tuned_weights_file import TunedWeights
from ..tav_core.tuning import MotionTraining, TuneSettings, WindowAnchor
from .motion_injection import motion_record
from .motion_training import MotionTrainer
from .temporal_training import TEMPORAL_RANK_INPUT, TemporalTrainer
from .tuned_weights import tuned_temporal_state, unet_fingerprint
from .unet_inflation import Inflation, temporal_layers_of

RESUME_INPUT = "resume_from"


def check_resumable(
    model, inflation: Inflation, weights: TunedWeights, settings: TuneSettings, frames: int, node: str
) -> int:
    """Refuse weights another base, inflation, motion module, tuning shape or draw recipe (clip length, window)
    made; returns the steps they were tuned for."""

    def refuse(problem: str, fix: str) -> TAVInputError:
        return TAVInputError(node, RESUME_INPUT, problem, fix)

    if weights.spatial_lora:
        raise refuse(f"these weights hold only the temporal part; the to_q part is the LoRA {weights.spatial_lora}.",
                     "Resume from a file saved without as_comfy_lora (One-Shot Tune's save_name writes one).")
    found = unet_fingerprint(model)
    if (found.architecture, found.weights) != (weights.fingerprint.architecture, weights.fingerprint.weights):
        raise refuse(f"these weights were tuned on another base ({weights.fingerprint.description or 'unknown'}).",
                     "Connect the checkpoint they were tuned on, inflated as they were.")
    if weights.inflation != inflation.config:
        raise refuse(f"these weights were tuned with {weights.inflation.describe()}, this MODEL is inflated with "
                     f"{inflation.config.describe()}.", "Inflate the checkpoint with the recorded settings.")
    if weights.motion != motion_record(inflation):
        tuned_with = weights.motion.name if weights.motion else "no motion module"
        raise refuse(f"these weights were tuned with {tuned_with}, and this MODEL carries "
                     f"{inflation.motion.name if inflation.motion else 'none'}.",
                     "Inflate with the motion module they were tuned with.")
    check_lora_rank(weights.q_lora, settings.rank, "rank", node)
    check_lora_rank(weights.temporal_lora, settings.temporal_rank, TEMPORAL_RANK_INPUT, node)
    if inflation.motion is not None:
        check_motion_training(weights, settings, node)
    check_draws(weights, settings, frames, node)
    current = temporal_layers_of(model)
    resumed = tuned_temporal_state(inflation, weights) if current is not None else {}
    if resumed and all(torch.equal(value, resumed[key].to(value)) for key, value in current.state_dict().items()):
        raise refuse("this MODEL already carries these weights (it is the tuned model, e.g. TAV Load Tuned "
                     "Weights' model output), so they would count twice.",
                     "Connect the checkpoint's MODEL through Inflate UNet to model, and the weights to resume_from.")
    return int(weights.info.get("steps", "0"))


def check_lora_rank(loras: dict, rank: int, input_name: str, node: str) -> None:
    """The LoRAs resume_from holds must have the rank `input_name` asks for (0: none, full-rank or whole)."""
    ranks = sorted({lora.down.shape[0] for lora in loras.values()})
    if ranks != ([rank] if rank else []):
        tuned = ranks[0] if ranks else 0
        raise TAVInputError(node, input_name, f"{rank}, but the weights in resume_from were tuned with {input_name} "
                            f"{tuned}.", f"Set {input_name} to {tuned} to resume them.")


def check_draws(weights: TunedWeights, settings: TuneSettings, frames: int, node: str) -> None:
    """The draws go on where the earlier tune stopped only for the same clip length, window, anchor and
    fresh-noise share."""
    tuned_frames = weights.info.get("frames")
    if tuned_frames is not None and int(tuned_frames) != frames:
        raise TAVInputError(node, RESUME_INPUT, f"these weights were tuned on a clip of {tuned_frames} frames, these "
                            f"latents hold {frames}.", "Resume on the clip they were tuned on.")
    window = settings.window if 0 < settings.window < frames else 0
    tuned_window = int(weights.info.get("window", "0"))
    if window != tuned_window:
        tuned = f"window {tuned_window}" if tuned_window else "the whole clip per step (window 0)"
        raise TAVInputError(node, "window", f"{settings.window}, but the weights in resume_from were tuned with "
                            f"{tuned}.", f"Set window to {tuned_window} to resume them.")
    anchor = WindowAnchor(settings.window_anchor).value
    if window and weights.info.get("window_anchor", anchor) != anchor:
        tuned_anchor = weights.info["window_anchor"]
        raise TAVInputError(node, "window_anchor", f"{anchor}, but the weights in resume_from were tuned with "
                            f"window_anchor {tuned_anchor}.", f"Set window_anchor to {tuned_anchor} to resume them.")
    tuned_share = float(weights.info.get("fresh_noise_share", "0"))
    if settings.fresh_noise_share != tuned_share:
        raise TAVInputError(node, "fresh_noise_share", f"{settings.fresh_noise_share}, but the weights in resume_from "
                            f"were tuned with fresh_noise_share {tuned_share}.",
                            f"Set fresh_noise_share to {tuned_share} to resume them.")


def check_motion_training(weights: TunedWeights, settings: TuneSettings, node: str) -> None:
    training = MotionTraining(settings.motion_training)
    tuned = MotionTraining.LORA if weights.motion_lora else MotionTraining.FULL if weights.motion_deltas \
        else MotionTraining.FROZEN
    if training != tuned:
        raise TAVInputError(node, "motion_training", f"{training.value}, but the weights in resume_from were tuned "
                            f"with {tuned.value}.", f"Set motion_training to {tuned.value} to resume them.")
    ranks = sorted({lora.down.shape[0] for lora in weights.motion_lora.values()})
    if training == MotionTraining.LORA and ranks != [settings.motion_rank]:
        raise TAVInputError(node, "motion_rank", f"{settings.motion_rank}, but the motion LoRA in resume_from has "
                            f"rank {ranks[0]}.", f"Set motion_rank to {ranks[0]} to resume it.")


@torch.no_grad()
def start_from(
    weights: TunedWeights, deltas: dict[str, nn.Parameter], q_loras: dict[str, nn.Module],
    temporal: TemporalTrainer | None, motion: MotionTrainer | None,
) -> None:
    """Set every trainable part to its value in `weights` (LoRAs keep alpha = rank, so up is stored unscaled)."""
    for key, delta in deltas.items():
        delta.copy_(weights.q_deltas[key])
    for adapters, loras in ((q_loras, weights.q_lora), (temporal.loras if temporal else {}, weights.temporal_lora),
                            (motion.loras if motion else {}, weights.motion_lora)):
        for key, adapter in adapters.items():
            adapter.lora_up.weight.copy_(loras[key].up)
            adapter.lora_down.weight.copy_(loras[key].down)
    if temporal is not None and weights.temporal:
        # With temporal LoRAs only the vectors are whole; the matrices stay fresh, the LoRAs' base.
        temporal.layers.load_state_dict(weights.temporal, strict=not temporal.loras)
    if motion is not None:
        for key, delta in motion.deltas.items():
            delta.copy_(weights.motion_deltas[key])
