"""The one-shot tuning loop: optimiser, mixed precision, clipping, loss bookkeeping.

Model-specific work (building the noisy latents, running the UNet, reading its target) comes in
as a `compute_loss(step)` callable, so this loop is testable without ComfyUI.
"""

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import Enum

import torch

ADAMW_BETAS = (0.9, 0.999)
WEIGHT_DECAY = 1e-2
MAX_GRAD_NORM = 1.0


class PrecisionChoice(str, Enum):
    AUTO = "auto"  # bf16 where supported, else fp16 with loss scaling; fp32 on the CPU
    BF16 = "bf16"
    FP16 = "fp16"
    FP32 = "fp32"


@dataclass(frozen=True)
class Precision:
    compute_dtype: torch.dtype
    autocast: bool
    loss_scaling: bool


def resolve_precision(choice: PrecisionChoice, device: torch.device, bf16_supported: bool) -> Precision:
    choice = PrecisionChoice(choice)
    if choice == PrecisionChoice.AUTO:
        if device.type == "cpu":
            choice = PrecisionChoice.FP32
        else:
            choice = PrecisionChoice.BF16 if bf16_supported else PrecisionChoice.FP16
    if choice == PrecisionChoice.FP32:
        return Precision(torch.float32, autocast=False, loss_scaling=False)
    if choice == PrecisionChoice.BF16:
        return Precision(torch.bfloat16, autocast=True, loss_scaling=False)
    return Precision(torch.float16, autocast=True, loss_scaling=True)


class CheckpointScope(str, Enum):
    """Which UNet layers recompute their activations during backward (non-reentrant checkpointing)."""

    AUTO = "auto"  # the fastest of the three below whose predicted peak memory fits the free memory
    BLOCKS = "blocks"  # every ResNet block and spatial transformer: least memory
    TRANSFORMERS = "transformers"  # spatial transformers (with their temporal layers) only
    OFF = "off"  # keep every activation: fastest, most memory


class MotionTraining(str, Enum):
    """What of a motion module One-Shot Tune trains."""

    LORA = "lora"  # low-rank deltas on its attention projections (AnimateDiff's motion-LoRA layout)
    FULL = "full"  # every weight of it
    FROZEN = "frozen"  # nothing


class Trainable(str, Enum):
    """Which temporal attention parameters learn, and how fresh temporal layers start (pseudo-3D convolutions,
    which the reference has not, learn in both)."""

    PACK = "pack"  # all of them; the layers start as an exact identity
    REFERENCE = "reference"  # the reference's: attn_temp only (norm_temp frozen), its output bias at nn.Linear's init


class WindowAnchor(str, Enum):
    """What a later window's sparse-causal attention reads as frame 0 while tuning in windows."""

    CLIP = "clip"  # the clip's frame 0, as windowed inversion and sampling read it
    WINDOW = "window"  # the window's own first frame: each window is a short video of its own


@dataclass(frozen=True)
class TuneSettings:
    steps: int = 500
    learning_rate: float = 3e-5
    seed: int = 0
    gradient_checkpointing: CheckpointScope = CheckpointScope.BLOCKS
    precision: PrecisionChoice = PrecisionChoice.AUTO
    compile: bool = False  # torch.compile each ResNet block and spatial transformer (regional compilation)
    channels_last: bool = False  # feed the UNet channels-last (NHWC) latents, which convolutions then keep
    motion_training: MotionTraining = MotionTraining.LORA  # with a motion module only
    motion_rank: int = 32
    trainable: Trainable = Trainable.PACK
    rank: int = 0  # to_q as LoRAs of this rank; 0: full-rank deltas (the paper)
    temporal_rank: int = 0  # the temporal layers' weight matrices as LoRAs of this rank; 0: tuned whole
    save_every: int = 0  # hand the weights to on_checkpoint every this many steps; 0: only at the end
    preview_every: int = 0  # show the denoised prediction of the training batch every this many steps; 0: never
    window: int = 0  # train each step on this many consecutive frames, drawn; 0: the whole clip
    window_anchor: WindowAnchor = WindowAnchor.WINDOW  # the shapes world's 48-frame clips chose it (RESULTS.md)
    fresh_noise_share: float = 0.0  # share of steps fitted from noise alone at the schedule's top; 0: the paper


FRESH_NOISE_TOP = 0.1  # fresh-noise steps draw their timestep from this top share of the schedule


@dataclass(frozen=True)
class StepDraw:
    """One training step's random choices: the reference's one timestep for the whole video with independent
    noise per frame, where the step's window starts, and whether the step is a fresh-noise one."""

    timestep: int
    noise: torch.Tensor  # for every frame of the clip
    start: int  # the window's first frame (0 without a window)
    fresh: bool = False  # the input is the noise alone, as text-to-video starts from an empty latent


def fresh_noise_floor(timesteps: int) -> int:
    """The lowest timestep a fresh-noise step draws: the top FRESH_NOISE_TOP of the schedule, where a sampler
    starting from an empty latent takes its first steps (DDIM's 25 uniform steps start at 961 of 1000)."""
    return round(timesteps * (1 - FRESH_NOISE_TOP))


def draw_step(
    generator: torch.Generator, timesteps: int, shape: torch.Size, window: int, fresh_share: float = 0.0
) -> StepDraw:
    """Drawn on the CPU, so every device draws alike; without a window and fresh-noise steps the draws are the
    whole-clip recipe's."""
    timestep = int(torch.randint(0, timesteps, (1,), generator=generator))
    noise = torch.randn(shape, generator=generator)
    frames = shape[0]
    start = int(torch.randint(0, frames - window + 1, (1,), generator=generator)) if 0 < window < frames else 0
    fresh = fresh_share > 0 and float(torch.rand(1, generator=generator)) < fresh_share
    if fresh:
        timestep = int(torch.randint(fresh_noise_floor(timesteps), timesteps, (1,), generator=generator))
    return StepDraw(timestep, noise, start, fresh)


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite: training stops and nothing is kept."""

    def __init__(self, step: int, value: float) -> None:
        super().__init__(f"loss became {value} at step {step}")


def target_mse(denoised: torch.Tensor, x0: torch.Tensor, output_gain: torch.Tensor | float) -> torch.Tensor:
    """MSE on the model's own target (epsilon, v, ...), from its denoised prediction.

    For any parameterisation where denoised = a(x, sigma) + output_gain * model_output, the error in
    the model's output equals (denoised - x0) / output_gain: eps models have gain -sigma, v models
    -sigma / sqrt(sigma^2 + 1). Reading the gain from the model avoids assuming its target.
    """
    return (((denoised.float() - x0.float()) / output_gain) ** 2).mean()


def copy_to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Host-to-device copy the host does not wait for: from pageable memory, PyTorch synchronises the stream
    after the copy, which would stall the step loop once per step on a GPU."""
    if device.type != "cuda":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


def make_optimizer(params: list[torch.nn.Parameter], learning_rate: float) -> torch.optim.AdamW:
    """The reference's AdamW; fused kernels on CUDA, multi-tensor (foreach) updates elsewhere."""
    on_cuda = bool(params) and all(p.is_cuda for p in params)
    kernel = {"fused": True} if on_cuda else {"foreach": True}
    return torch.optim.AdamW(params, lr=learning_rate, betas=ADAMW_BETAS, weight_decay=WEIGHT_DECAY, **kernel)


def run_tuning(
    params: Iterable[torch.nn.Parameter],
    compute_loss: Callable[[int], torch.Tensor],
    settings: TuneSettings,
    precision: Precision,
    device: torch.device,
    on_progress: Callable[[int, list[float]], None],
    check_cancel: Callable[[], None],
    report_every: int = 1,
    on_checkpoint: Callable[[int, list[float]], None] | None = None,
) -> list[float]:
    """AdamW on `params` for settings.steps steps; returns the loss of every step.

    Losses stay on the device and are read back every `report_every` steps (and at the end), so
    a GPU never waits on the host inside the loop; a non-finite loss stops training at that readback.
    Every settings.save_every steps before the last, the losses are read back (a diverged tune is never
    checkpointed) and on_checkpoint gets the steps done and the losses so far.
    """
    params = list(params)
    optimizer = make_optimizer(params, settings.learning_rate)
    scaler = torch.amp.GradScaler(device.type, enabled=precision.loss_scaling)
    history = torch.zeros(settings.steps, device=device)
    losses: list[float] = []
    try:
        for step in range(settings.steps):
            check_cancel()
            with torch.autocast(device.type, dtype=precision.compute_dtype, enabled=precision.autocast):
                loss = compute_loss(step)
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(params, MAX_GRAD_NORM)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            history[step] = loss.detach()
            done = step + 1
            checkpoint = on_checkpoint is not None and settings.save_every and done % settings.save_every == 0 \
                and done < settings.steps
            if done % report_every == 0 or done == settings.steps or checkpoint:
                losses = _read_back(history, len(losses), done, losses)
                on_progress(done, losses)
            if checkpoint:
                on_checkpoint(done, losses)
    finally:
        optimizer.zero_grad(set_to_none=True)
        del optimizer, scaler
    return losses


def _read_back(history: torch.Tensor, start: int, end: int, losses: list[float]) -> list[float]:
    new = history[start:end].cpu().tolist()
    for offset, value in enumerate(new):
        if not math.isfinite(value):
            raise NonFiniteLossError(start + offset + 1, value)
    return losses + new
