"""One-shot tuning of an inflated ComfyUI model on one video.

The loop runs inside ComfyUI's own sampling machinery (a Sampler driven by a guider, as
comfy_extras/nodes_train.py does), so conditioning (SDXL's extra conds included), latent scaling
and model loading are ComfyUI's. Everything trainable lives outside the user's model:
- to_q deltas (or, with a rank, comfy.weight_adapter LoRAs), added to the frozen weights through ComfyUI weight
  wrappers on a private clone;
- a private fp32 copy of the temporal layers;
- with a motion module, train adapters (a motion LoRA, or deltas) on a private clone of its patcher.
Afterwards the tuned MODEL is a fresh clone of the input with the deltas as weight patches and the
trained temporal layers attached; the private training clone is unloaded at once (its patches undone,
its fp32 copy freed), not left loaded until ComfyUI next needs the memory.
"""

import math
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from functools import partial

import comfy.ldm.modules.attention as comfy_attention
import comfy.model_management
import comfy.ops
import comfy.samplers
import latent_preview
import torch
from comfy.ldm.modules.attention import SpatialTransformer
from torch import nn

from ..tav_core.anchor_frames import AnchorFrames
from ..tav_core.errors import TAVInputError
from ..tav_core.memory_forecast import forecast_peaks, pick_scope
from ..tav_core.tuned_weights_file import TunedWeights
from ..tav_core.tuning import (
    CheckpointScope,
    MotionTraining,
    NonFiniteLossError,
    StepDraw,
    Trainable,
    TuneSettings,
    WindowAnchor,
    copy_to_device,
    draw_step,
    resolve_precision,
    run_tuning,
    target_mse,
)
from .delta_weight import DeltaWeight
from .frame_windowing import check_window
from .input_checks import require_inflated, require_video_latent
from .memory_probe import probe_saved_bytes
from .motion_injection import motion_patcher_of, motion_record, swap_motion_patcher
from .motion_training import motion_trainer
from .progress import NodeProgress, check_cancel
from .resume import check_resumable, start_from
from .temporal_training import check_temporal_rank, temporal_trainer
from .train_adapters import learned_lora, lora_parameters, seeded_lora
from .tuned_weights import apply_tuned_weights, tuned_q_shapes, unet_fingerprint
from .unet_forward import ForwardState, forward_state, published

GPU_REPORT_EVERY = 10  # loss read-backs (host syncs) on a GPU; every step on the CPU


@dataclass
class TuneResult:
    model: object  # the tuned ModelPatcher
    weights: TunedWeights
    losses: list[float]


class TrainingForward:
    """Object patch for one UNet layer while tuning: optionally torch.compile'd, optionally checkpointed.

    Non-reentrant checkpointing gives every trainable parameter its gradient (the reference's
    reentrant checkpointing starved the down blocks). Recomputation runs during backward, after the
    UNet has moved on and rewritten transformer_options["block"], so the layer is recomputed with
    a snapshot of the options and of the forward state (video layout, sampling options) it saw.
    `forward` is the layer's forward as the model runs it: its own, or an object patch already on it
    (a motion module that follows the layer).
    Compilation is regional: layers share one compiled function, specialised per layer kind, shape and
    (for transformers, whose patches read it) block key, so compile time stays a fraction of the UNet's.
    """

    def __init__(self, forward: Callable, checkpoint: bool, compile: bool) -> None:
        self.forward = forward
        self.checkpoint = checkpoint
        # Compiling the checkpointed call lets the compiler plan the recomputation itself.
        self.run = torch.compile(self.run_layer, dynamic=False) if compile else self.run_layer

    def __call__(self, *args, **kwargs):
        # The forward state is read here, outside the compiled function: Dynamo before torch 2.14 cannot
        # trace ContextVar.get and would break every layer's graph on it.
        return self.run(forward_state(), *args, **kwargs)

    def run_layer(self, state: ForwardState, *args, **kwargs):
        if not (self.checkpoint and torch.is_grad_enabled()):
            return self.forward(*args, **kwargs)
        frozen_args = tuple(dict(a) if isinstance(a, dict) else a for a in args)
        frozen_kwargs = {k: dict(v) if isinstance(v, dict) else v for k, v in kwargs.items()}

        def recomputable(*call_args, **call_kwargs):
            call_args = tuple(dict(a) if isinstance(a, dict) else a for a in call_args)
            call_kwargs = {k: dict(v) if isinstance(v, dict) else v for k, v in call_kwargs.items()}
            with published(state):
                return self.forward(*call_args, **call_kwargs)

        return torch.utils.checkpoint.checkpoint(recomputable, *frozen_args, use_reentrant=False, **frozen_kwargs)


# ComfyUI's split and sub-quadratic attention (its choice on the CPU and where SDPA is off) chunk the work by
# the memory free at each call.
MEMORY_ADAPTIVE_ATTENTION = tuple(
    getattr(function, "__wrapped__", function)
    for function in (comfy_attention.attention_split, comfy_attention.attention_sub_quad)
)


def trainable(attention):
    """The attention to tune with: split and sub-quadratic give way to torch's SDPA, any other runs as chosen.

    Sub-quadratic attention's chunked path cannot be differentiated (it writes exp() into a preallocated
    tensor), and a memory-adaptive attention may chunk a checkpointed layer's recomputation unlike its
    forward pass, which torch refuses (seen on the CPU at 512x512).
    """
    if attention in MEMORY_ADAPTIVE_ATTENTION:
        return comfy_attention.attention_pytorch
    return attention


def trainable_attention(attention, *args, **kwargs):
    """ComfyUI attention override while tuning: the same differentiable computation every time."""
    return trainable(attention)(*args, **kwargs)


def tuning_attention_override(user_override=None):
    """Tuning's attention override, put in front of one the user's graph already set on the model.

    The user's override still decides; it is handed the trainable attention in place of ComfyUI's choice.
    """
    if user_override is None:
        return trainable_attention

    def override(attention, *args, **kwargs):
        return user_override(trainable(attention), *args, **kwargs)

    return override


class _TuningSampler(comfy.samplers.Sampler):
    """Stands where a sampler would, so ComfyUI prepares conds, latents and models; then trains."""

    def __init__(self, train) -> None:
        self.train = train

    def sample(self, model_wrap, sigmas, extra_args, callback, noise, latent_image=None, denoise_mask=None,
               disable_pbar=False):
        self.train(model_wrap, extra_args, latent_image)
        return latent_image


class _TuneGuider(comfy.samplers.CFGGuider):
    """Conditional prediction only (cfg 1), as the training objective needs."""

    def set_conds(self, positive) -> None:
        self.inner_set_conds({"positive": positive})


def check_settings(settings: TuneSettings, q_shapes: dict[str, torch.Size], node: str) -> None:
    if settings.rank < 0:
        raise TAVInputError(node, "rank", f"{settings.rank}: the rank is 0 (full-rank deltas) or more.")
    smallest = min((min(shape) for shape in q_shapes.values()), default=0)
    if settings.rank > smallest:
        raise TAVInputError(
            node, "rank", f"{settings.rank} is above the smallest tuned to_q's dimension ({smallest}), where a LoRA "
            "holds no more than a full-rank delta.", f"Use a rank up to {smallest}, or 0 for full-rank deltas.",
        )
    if settings.steps < 1:
        raise TAVInputError(node, "steps", f"{settings.steps}: at least 1 step is needed.")
    if not (math.isfinite(settings.learning_rate) and settings.learning_rate > 0):
        raise TAVInputError(node, "learning_rate", f"{settings.learning_rate}: the learning rate must be above 0.")


def use_ordinary_tensors(module: nn.Module) -> None:
    """Swap inference-mode weights for ordinary tensors with identical values and freeze everything.

    ComfyUI creates weights under torch.inference_mode, and autograd refuses to save those for
    backward. The values (and so every other clone's output) stay bitwise the same.
    """
    with torch.no_grad():
        for sub in module.modules():
            for name, param in list(sub._parameters.items()):
                if param is None:
                    continue
                if param.is_inference():
                    sub._parameters[name] = nn.Parameter(param.clone(), requires_grad=False)
                else:
                    param.requires_grad_(False)
            for name, buffer in list(sub._buffers.items()):
                if buffer is not None and buffer.is_inference():
                    sub._buffers[name] = buffer.clone()


def checkpointed(module: nn.Module, scope: CheckpointScope) -> bool:
    if scope == CheckpointScope.BLOCKS:
        return True
    return scope == CheckpointScope.TRANSFORMERS and isinstance(module, SpatialTransformer)


def output_gain(model_sampling, sigma: torch.Tensor) -> float:
    """d(denoised)/d(model output) at sigma, read from the model's own parameterisation."""
    ones, zeros = torch.ones(1, 1, 1, 1), torch.zeros(1, 1, 1, 1)
    return float(model_sampling.calculate_denoised(sigma.reshape(1), ones, zeros))


def tune(
    model, latent: dict, conditioning: list, settings: TuneSettings, node: str, caption: str = "",
    resume: TunedWeights | None = None, on_checkpoint: Callable[[TunedWeights], None] | None = None,
) -> TuneResult:
    """Run One-Shot Tune; the input model and every other clone stay exactly as they were.

    resume: weights of an earlier tune of this setup to continue from. on_checkpoint: called with the weights so
    far every settings.save_every steps (TAV_WEIGHTS as at the end, the steps counted from the first tune)."""
    inflation = require_inflated(model, node)
    samples = require_video_latent(model, latent, node, "latents", settings.window)
    frames = samples.shape[0]
    check_window(settings.window, 0, frames, node)
    q_shapes = tuned_q_shapes(model)
    check_settings(settings, q_shapes, node)
    check_temporal_rank(model, inflation, settings.temporal_rank, node)
    steps_before = check_resumable(model, inflation, resume, settings, frames, node) if resume is not None else 0
    fingerprint = unet_fingerprint(model)
    device = model.load_device
    precision = resolve_precision(
        settings.precision, device, comfy.model_management.should_use_bf16(device, prioritize_performance=False)
    )
    progress = NodeProgress(settings.steps)

    with torch.inference_mode(False):
        trainer = model.clone()
        trainer.set_model_compute_dtype(precision.compute_dtype)
        deltas, q_loras = {}, {}
        # Draws every LoRA's up half: the to_q ones first, then the temporal ones.
        generator = torch.Generator().manual_seed(settings.seed)
        if settings.rank:
            for key in sorted(q_shapes):
                q_loras[key] = seeded_lora(model.get_model_object(key), settings.rank, generator, device)
                trainer.add_weight_wrapper(key, q_loras[key])
        else:
            for key, shape in q_shapes.items():
                deltas[key] = nn.Parameter(torch.zeros(shape, device=device, dtype=torch.float32))
                trainer.add_weight_wrapper(key, DeltaWeight(deltas[key]))
        temporal = temporal_trainer(trainer, model, inflation, settings, generator, device)
        motion = None
        if inflation.motion is not None:
            motion = motion_trainer(
                motion_patcher_of(model), MotionTraining(settings.motion_training), settings.motion_rank, settings.seed,
                device,
            )
            swap_motion_patcher(trainer, motion.patcher)
        if resume is not None:
            start_from(resume, deltas, q_loras, temporal, motion)
        transformer_options = trainer.model_options["transformer_options"]
        transformer_options["optimized_attention_override"] = tuning_attention_override(
            transformer_options.get("optimized_attention_override")
        )
        scope = CheckpointScope(settings.gradient_checkpointing)
        sites = inflation.sites.layers
        training_forwards: dict[str, TrainingForward] = {}  # auto sets their checkpointing once it has chosen
        for path, module in sites:
            if settings.compile or scope == CheckpointScope.AUTO or checkpointed(module, scope):
                key = f"{path}.forward"
                forward = trainer.object_patches.get(key, partial(type(module).forward, module))
                training_forwards[path] = TrainingForward(forward, checkpointed(module, scope), settings.compile)
                trainer.add_object_patch(key, training_forwards[path])

        comfy.model_management.load_models_gpu(
            [trainer, *trainer.get_nested_additional_models()], memory_required=1e20, force_full_load=True
        )
        use_ordinary_tensors(trainer.model)
        params = list(deltas.values()) + [p for adapter in q_loras.values() for p in lora_parameters(adapter)]
        if temporal is not None:
            params += temporal.parameters()
        if motion is not None:
            use_ordinary_tensors(motion.patcher.model)
            params += motion.parameters()
        losses: list[float] = []
        chosen_scope: ScopeChoice | None = None

        def train(model_wrap, extra_args, x0: torch.Tensor) -> None:
            model_sampling = model_wrap.inner_model.model_sampling
            sigma_table = model_sampling.sigmas.detach().float().cpu()
            sigma_table_on_device = sigma_table.to(x0.device)
            nonlocal chosen_scope
            generator = torch.Generator().manual_seed(settings.seed)
            window = settings.window if 0 < settings.window < x0.shape[0] else x0.shape[0]
            anchored = settings.window_anchor == WindowAnchor.CLIP
            # Fresh-noise steps start where text-to-video does: ComfyUI's empty latent, as the sampler takes it in.
            empty_latent = (model_wrap.inner_model.process_latent_in(torch.zeros_like(x0))
                            if settings.fresh_noise_share else None)

            def draw() -> StepDraw:
                return draw_step(generator, len(sigma_table), x0.shape, settings.window, settings.fresh_noise_share)

            for _ in range(steps_before):  # a resumed tune goes on with the draws of its later steps
                draw()

            if scope == CheckpointScope.AUTO:
                chosen_scope = choose_scope(
                    model_wrap, extra_args, x0, window, params, device, sites, precision
                )
                for path, module in sites:
                    training_forwards[path].checkpoint = checkpointed(module, chosen_scope.scope)
            previewer = training_previewer(trainer) if settings.preview_every else None
            previews: dict[int, tuple] = {}

            def compute_loss(step: int) -> torch.Tensor:
                drawn = draw()
                sigma = sigma_table[drawn.timestep]
                noise = copy_to_device(drawn.noise, x0.device).to(x0.dtype)  # without a host-device sync
                sigmas = sigma_table_on_device[drawn.timestep].expand(window)
                noised = empty_latent if drawn.fresh else x0  # what this step's noise is added to
                anchors = None
                if drawn.start and anchored:  # frame 0 as the clip's first window sees it, at this step's noise
                    anchors = AnchorFrames()
                    first_window = model_sampling.noise_scaling(sigmas, noise[:window], noised[:window])
                    with torch.no_grad(), published(ForwardState(None, None, anchors)):
                        model_wrap(first_window, sigmas, **extra_args)
                    anchors.next_window(carry_at=None)  # the step's window reads frame 0; its first frame, itself
                window_frames = slice(drawn.start, drawn.start + window)
                target = x0[window_frames]
                noisy = model_sampling.noise_scaling(sigmas, noise[window_frames], noised[window_frames])
                if settings.channels_last:
                    noisy = noisy.contiguous(memory_format=torch.channels_last)
                with published(ForwardState(None, None, anchors)) if anchors is not None else nullcontext():
                    denoised = model_wrap(noisy, sigmas, **extra_args)
                if previewer is not None and (step + 1) % settings.preview_every == 0:
                    previews[step + 1] = first_and_last_frame_preview(previewer, denoised.detach())
                return target_mse(denoised, target, output_gain(model_sampling, sigma))

            def on_progress(done: int, so_far: list[float]) -> None:
                shown = previews.pop(max(previews), None) if previews else None
                previews.clear()
                scope_text = f"  ({chosen_scope.text})" if chosen_scope is not None else ""
                progress.update(done, f"step {done}/{settings.steps}  loss {so_far[-1]:.5f}{scope_text}", shown)

            def checkpoint(done: int, so_far: list[float]) -> None:
                on_checkpoint(snapshot(done, so_far[-1]))

            losses.extend(run_tuning(
                params, compute_loss, settings, precision, device, on_progress, check_cancel,
                report_every=1 if device.type == "cpu" else GPU_REPORT_EVERY,
                on_checkpoint=checkpoint if on_checkpoint is not None else None,
            ))

        def snapshot(done: int, last_loss: float) -> TunedWeights:
            """The tuned parameters after `done` steps of this run, as copies on the CPU."""
            motion_lora, motion_deltas = motion.learned() if motion is not None else ({}, {})
            temporal_whole, temporal_lora = temporal.learned() if temporal is not None else ({}, {})
            return TunedWeights(
                q_deltas={key: delta.detach().cpu().clone() for key, delta in deltas.items()},
                temporal=temporal_whole,
                temporal_lora=temporal_lora,
                inflation=inflation.config,
                fingerprint=fingerprint,
                motion=motion_record(inflation),
                motion_lora=motion_lora,
                motion_deltas=motion_deltas,
                q_lora={key: learned_lora(adapter) for key, adapter in q_loras.items()},
                info={
                    "frames": str(frames),
                    "caption": caption,
                    "steps": str(steps_before + done),
                    "learning_rate": repr(settings.learning_rate),
                    "seed": str(settings.seed),
                    "trainable": Trainable(settings.trainable).value,
                    "precision": str(precision.compute_dtype).removeprefix("torch."),
                    **({"gradient_checkpointing": f"auto: {chosen_scope.scope.value}"} if chosen_scope is not None
                       else {}),
                    "final_loss": f"{last_loss:.6g}",
                    **({"rank": str(settings.rank)} if settings.rank else {}),
                    **({"temporal_rank": str(settings.temporal_rank)} if settings.temporal_rank else {}),
                    **({"window": str(settings.window), "window_anchor": WindowAnchor(settings.window_anchor).value}
                       if 0 < settings.window < frames else {}),
                    **({"fresh_noise_share": repr(settings.fresh_noise_share)} if settings.fresh_noise_share else {}),
                    **({"resumed_at_step": str(steps_before)} if resume is not None else {}),
                    **({"motion_training": MotionTraining(settings.motion_training).value} if motion is not None
                       else {}),
                },
            )

        guider = _TuneGuider(trainer)
        guider.set_conds(conditioning)
        # Every layer may need its own specialisation of the shared compiled function: room for all of them.
        compile_room = torch._dynamo.config.patch(recompile_limit=2 * len(sites)) if settings.compile else nullcontext()
        try:
            with compile_room:
                guider.sample(
                    torch.zeros_like(samples), samples, _TuningSampler(train),
                    sigmas=torch.ones(1), seed=settings.seed, disable_pbar=True,
                )
        except NonFiniteLossError as error:
            raise TAVInputError(
                node, "learning_rate", f"training diverged: {error}.",
                "Nothing was kept. Try a lower learning_rate or precision fp32.",
            ) from error
        finally:
            unload_now([trainer, *trainer.get_nested_additional_models()])

        weights = snapshot(settings.steps, losses[-1])
    return TuneResult(apply_tuned_weights(model, weights), weights, losses)


@dataclass(frozen=True)
class ScopeChoice:
    scope: CheckpointScope
    text: str  # for the progress line


PROBE_SEED = 0


def choose_scope(
    model_wrap, extra_args: dict, x0: torch.Tensor, frames: int, params: list, device, sites: tuple, precision
) -> ScopeChoice:
    """gradient_checkpointing auto: what autograd saves in a forward of 1 and of 2 frames (eager, nothing
    checkpointed yet), forecast for `frames` frames under each scope with the trained values' gradients and AdamW
    moments, against the device's free memory now (the models are loaded)."""
    model_sampling = model_wrap.inner_model.model_sampling
    sigma = model_sampling.sigmas[len(model_sampling.sigmas) // 2].to(x0.device)
    noise = torch.randn(x0[:2].shape, generator=torch.Generator().manual_seed(PROBE_SEED)).to(x0.device, x0.dtype)

    def run_forward(count: int) -> None:
        sigmas = sigma.expand(count)
        with torch.autocast(device.type, dtype=precision.compute_dtype, enabled=precision.autocast):  # as the steps
            model_wrap(model_sampling.noise_scaling(sigmas, noise[:count], x0[:count]), sigmas, **extra_args)

    one, two = (probe_saved_bytes(run_forward, sites, count) for count in (1, 2))
    optimizer_bytes = 12 * sum(param.numel() for param in params)  # fp32 gradient and two AdamW moments each
    peaks = forecast_peaks(one, two, frames, optimizer_bytes)
    scope, text = pick_scope(peaks, comfy.model_management.get_free_memory(device))
    return ScopeChoice(scope, text)


def training_previewer(model) -> latent_preview.LatentPreviewer | None:
    """ComfyUI's latent previewer for the model (TAESD where the user chose it), or, where previews are off in
    ComfyUI's settings, its Latent2RGB one: preview_every asks for them."""
    latent_format = model.model.latent_format
    previewer = latent_preview.get_previewer(model.load_device, latent_format)
    if previewer is None and latent_format.latent_rgb_factors is not None:
        reshape = getattr(latent_format, "latent_rgb_factors_reshape", None)  # newer hosts only
        previewer = latent_preview.Latent2RGBPreviewer(
            latent_format.latent_rgb_factors, latent_format.latent_rgb_factors_bias,
            **({"latent_rgb_factors_reshape": reshape} if reshape is not None else {}),
        )
    return previewer


@torch.no_grad()
def first_and_last_frame_preview(previewer, denoised: torch.Tensor) -> tuple:
    """The denoised first and last frames side by side, as a sampler's preview: (format, image, max size)."""
    pair = torch.cat([denoised[0], denoised[-1]], dim=-1).unsqueeze(0).float()
    return previewer.decode_latent_to_preview_image("JPEG", pair)


def unload_now(patchers: list) -> None:
    """Unload these loaded patchers: weights and object patches restored, their memory given back."""
    loaded_models = comfy.model_management.current_loaded_models
    for index in reversed(range(len(loaded_models))):
        if any(loaded_models[index].model is patcher for patcher in patchers):
            loaded_models.pop(index).model_unload()
    comfy.model_management.soft_empty_cache()
