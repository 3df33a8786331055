"""One-Shot Tune: fine-tune an inflated MODEL on one video (the Tune-A-Video recipe)."""

import logging
from functools import partial

import torch
from comfy_api.latest import io

from ..comfy_glue.frame_windowing import check_window
from ..comfy_glue.model_folders import save_tuned_weights
from ..comfy_glue.one_shot_tune import tune
from ..comfy_glue.progress import show_on_node
from ..comfy_glue.resume import RESUME_INPUT
from ..comfy_glue.temporal_training import TEMPORAL_RANK_INPUT
from ..tav_core.errors import TAVInputError
from ..tav_core.loss_curve import draw_loss_curve
from ..tav_core.tuning import (
    CheckpointScope,
    MotionTraining,
    PrecisionChoice,
    Trainable,
    TuneSettings,
    WindowAnchor,
)
from .common import CATEGORY, TUNED_WEIGHTS, check_numbers, validation_result
from .tuned_weights_io import checked_save_path
from .weights_in_prompt import refuse_save_and_load_together

NODE = "One-Shot Tune"
MAX_RANK = 1024


class OneShotTune(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="TAV_OneShotTune",
            display_name=NODE,
            category=CATEGORY,
            description=(
                "Fine-tunes an inflated model on one video and its caption (Tune-A-Video's one-shot tuning): "
                "only the query projections of every attention and the temporal layers learn; everything else "
                "stays frozen and the input model is never changed. Feed the tuned MODEL to DDIM Invert Video "
                "and TAV Sample to edit the video."
            ),
            inputs=[
                io.Model.Input("model", tooltip="An inflated MODEL (from Inflate UNet)."),
                io.Latent.Input(
                    "latents",
                    tooltip="The source video's frames encoded with VAEEncode: the batch is the frames (e.g. 24).",
                ),
                io.Conditioning.Input(
                    "conditioning", tooltip="The source caption from CLIPTextEncode, e.g. 'a man is skiing'."
                ),
                io.Int.Input(
                    "steps", default=500, min=1, max=100000,
                    tooltip="Optimisation steps. The paper uses 500; 100-300 is often enough for a quick look.",
                ),
                io.Float.Input(
                    "learning_rate", default=3e-5, min=1e-8, max=1e-2, step=1e-6,
                    tooltip="AdamW learning rate (the paper: 3e-5). Lower it if the loss curve jumps or diverges.",
                ),
                io.Int.Input(
                    "seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF,
                    tooltip="Seed for the timesteps and noise drawn at each step; same seed, same result.",
                ),
                io.Combo.Input(
                    "gradient_checkpointing", options=[c.value for c in CheckpointScope],
                    default=CheckpointScope.AUTO.value,
                    tooltip=(
                        "Which layers recompute their activations during backward instead of keeping them. "
                        "auto: the fastest of off / transformers / blocks whose predicted peak memory fits the "
                        "device's free memory (predicted from two short probes of what the UNet keeps per frame; "
                        "the choice shows in the progress text and the weights' info). blocks: every ResNet block "
                        "and transformer, least memory, slowest; transformers: only the attention layers; off: "
                        "fastest, most memory. The result is the same. SD1.5, 24 frames at 512x512 in bf16: about "
                        "7, 11.5 and 28 GB."
                    ),
                ),
                io.Combo.Input(
                    "precision", options=[p.value for p in PrecisionChoice], default=PrecisionChoice.AUTO.value,
                    tooltip=(
                        "auto: bf16 where the GPU supports it, else fp16 with loss scaling; fp32 on the CPU. "
                        "The tuned parameters are always kept in fp32."
                    ),
                ),
                io.String.Input(
                    "save_name", default="", optional=True,
                    tooltip=(
                        "If set, also save the tuned weights as models/tuneavideo/<save_name>.safetensors "
                        "(a small file: only what was tuned). Sub-folders with '/' are fine."
                    ),
                ),
                io.String.Input(
                    "caption", default="", optional=True, multiline=True,
                    tooltip="The source caption as text, recorded in the weights file for later reference.",
                ),
                io.Combo.Input(
                    "motion_training", options=[m.value for m in MotionTraining], default=MotionTraining.LORA.value,
                    optional=True,
                    tooltip=(
                        "With a motion module on the model (Inflate UNet's motion_module): lora trains a motion "
                        "LoRA on its attention projections (MotionDirector's way; small files, the module's prior "
                        "kept), full trains all of its weights (most memory), frozen leaves it as loaded. Without a "
                        "motion module this input has no effect. A LoRA usually wants a higher learning_rate (1e-4)."
                    ),
                ),
                io.Int.Input(
                    "motion_rank", default=32, min=1, max=1024, optional=True,
                    tooltip="Rank of the motion LoRA (AnimateDiff's released motion LoRAs have 64).",
                ),
                io.Combo.Input(
                    "trainable", options=[t.value for t in Trainable], default=Trainable.PACK.value, optional=True,
                    tooltip=(
                        "pack: every temporal parameter learns, and fresh temporal layers start as an exact identity. "
                        "reference: as the original code, the temporal LayerNorm (norm_temp) stays frozen and fresh "
                        "layers start with nn.Linear's random output bias (only the output weight is zero), to "
                        "reproduce and compare its behaviour. The to_q projections (and pseudo3d temporal "
                        "convolutions) learn either way."
                    ),
                ),
                io.Int.Input(
                    "rank", default=0, min=0, max=MAX_RANK, optional=True,
                    tooltip=(
                        "0: every to_q learns a full-rank delta (the paper; SD1.5's file about 140 MB with the "
                        "temporal layers). Above 0: a LoRA of this rank per to_q instead (comfy.weight_adapter's), a "
                        "smaller file that TAV Save Tuned Weights can also write as a standard ComfyUI LoRA "
                        "(as_comfy_lora). A LoRA usually wants a higher learning_rate (1e-4)."
                    ),
                ),
                io.Int.Input(
                    "save_every", default=0, min=0, max=100000, optional=True,
                    tooltip=(
                        "With a save_name: every this many steps the weights so far are written there (atomically, "
                        "replacing the last), so a crash or Cancel loses at most this many steps; continue with TAV "
                        "Load Tuned Weights -> resume_from. 0: written once, at the end."
                    ),
                ),
                io.Int.Input(
                    "preview_every", default=0, min=0, max=100000, optional=True,
                    tooltip=(
                        "Every this many steps, show over the node the model's denoised prediction of the training "
                        "batch (first | last frame, ComfyUI's latent previewer), to see the tune converge or go "
                        "wrong. 0: no previews."
                    ),
                ),
                io.Int.Input(
                    "window", default=0, min=0, max=4096, optional=True,
                    tooltip=(
                        "0: every step trains on all frames at once (the paper). Above 0: each step trains on this "
                        "many consecutive frames drawn from the clip (seeded), so memory follows the window, not the "
                        "clip: for long clips. Invert and sample them with the same window."
                    ),
                ),
                io.Combo.Input(
                    "window_anchor", options=[a.value for a in WindowAnchor], default=WindowAnchor.WINDOW.value,
                    optional=True,
                    tooltip=(
                        "With a window: what a window that starts later reads as frame 0 in sparse-causal attention. "
                        "window (default): the window's own first frame, so each window trains as a short video of "
                        "its own (less drift towards the clip's end on the shapes world, one forward pass per step "
                        "cheaper); clip: the clip's frame 0, seen through the clip's first window, as windowed "
                        "inversion and sampling read it (one extra forward pass per step)."
                    ),
                ),
                # Widgets added later go last: saved workflows keep their widget values in order.
                io.Int.Input(
                    TEMPORAL_RANK_INPUT, default=0, min=0, max=MAX_RANK, optional=True,
                    tooltip=(
                        "0: the temporal layers learn whole (the paper). Above 0: their weight matrices (temporal "
                        "attention's projections, pseudo3d convolutions' kernels) learn as LoRAs of this rank on "
                        "their fresh initialisation, their norms and biases whole: fewer trained values and a much "
                        "smaller file (whole, they are most of SD1.5's 140 MB). Needs a freshly inflated MODEL."
                    ),
                ),
                io.Float.Input(
                    "fresh_noise_share", default=0.0, min=0.0, max=1.0, step=0.05, optional=True,
                    tooltip=(
                        "0: every step trains on the clip noised (the paper). Above 0: this share of the steps "
                        "trains at the top tenth of the noise schedule from noise alone, as text-to-video from an "
                        "empty latent starts, so the tuned model lays the clip's layout and motion out from fresh "
                        "noise instead of reading them out of its input. For motion transfer (fresh-noise samples "
                        "with a new caption), e.g. 1 with a motion LoRA; edits from DDIM Invert Video do not need it. "
                        "It fits slowly: more steps or a higher learning rate follow the clip's path more closely."
                    ),
                ),
                TUNED_WEIGHTS.Input(
                    RESUME_INPUT, optional=True,
                    tooltip=(
                        "Continue an earlier tune of this clip (TAV Load Tuned Weights' tuned_weights, or One-Shot "
                        "Tune's) instead of starting from zero: same checkpoint, inflation, rank and seed; model "
                        "stays the untuned inflated MODEL. steps are the steps to add; the optimiser restarts, the "
                        "random draws go on where the earlier tune stopped."
                    ),
                ),
            ],
            outputs=[
                io.Model.Output(display_name="model", tooltip="The tuned video model."),
                TUNED_WEIGHTS.Output(
                    display_name="tuned_weights", tooltip="The tuned parameters, for TAV Save Tuned Weights."
                ),
                io.Image.Output(display_name="loss_curve", tooltip="The training loss per step, as a picture."),
            ],
            hidden=[io.Hidden.prompt],
        )

    @classmethod
    def check_inputs(
        cls, steps: int | None, learning_rate: float | None, save_name: str | None, motion_rank: int | None = None,
        rank: int | None = None, save_every: int | None = None, preview_every: int | None = None,
        window: int | None = None, temporal_rank: int | None = None, fresh_noise_share: float | None = None,
    ) -> None:
        check_numbers(cls, {"steps": steps, "learning_rate": learning_rate, "motion_rank": motion_rank, "rank": rank,
                            "save_every": save_every, "preview_every": preview_every, "window": window,
                            TEMPORAL_RANK_INPUT: temporal_rank, "fresh_noise_share": fresh_noise_share})
        check_window(window, None, None, NODE)
        named = save_name is not None and bool(save_name.strip())
        if named:
            checked_save_path(NODE, save_name)
        if save_every and save_name is not None and not named:
            raise TAVInputError(
                NODE, "save_every", f"{save_every}, but save_name is empty: there is nowhere to save to.",
                "Give a save_name, or set save_every to 0.",
            )

    @classmethod
    def validate_inputs(
        cls, steps: int | None = None, learning_rate: float | None = None, save_name: str | None = None,
        motion_rank: int | None = None, rank: int | None = None, save_every: int | None = None,
        preview_every: int | None = None, window: int | None = None, temporal_rank: int | None = None,
        fresh_noise_share: float | None = None,
    ) -> bool | str:
        return validation_result(
            lambda: cls.check_inputs(
                steps, learning_rate, save_name, motion_rank, rank, save_every, preview_every, window, temporal_rank,
                fresh_noise_share,
            )
        )

    @classmethod
    def execute(
        cls, model, latents, conditioning, steps: int, learning_rate: float, seed: int,
        gradient_checkpointing: str, precision: str, save_name: str = "", caption: str = "",
        motion_training: str = MotionTraining.LORA.value, motion_rank: int = 32, trainable: str = Trainable.PACK.value,
        rank: int = 0, save_every: int = 0, resume_from=None, preview_every: int = 0, window: int = 0,
        window_anchor: str = WindowAnchor.WINDOW.value, temporal_rank: int = 0, fresh_noise_share: float = 0.0,
    ) -> io.NodeOutput:
        cls.check_inputs(
            steps, learning_rate, save_name, motion_rank, rank, save_every, preview_every, window, temporal_rank,
            fresh_noise_share,
        )
        refuse_save_and_load_together(cls.hidden, NODE, "save_name", save_name, saving=True)
        settings = TuneSettings(
            steps, learning_rate, seed, CheckpointScope(gradient_checkpointing), PrecisionChoice(precision),
            motion_training=MotionTraining(motion_training), motion_rank=motion_rank, trainable=Trainable(trainable),
            rank=rank, save_every=save_every, preview_every=preview_every, window=window,
            window_anchor=WindowAnchor(window_anchor), temporal_rank=temporal_rank,
            fresh_noise_share=fresh_noise_share,
        )
        checkpoint = partial(save_tuned_weights, name=save_name, dtype=torch.float16) if save_every else None
        result = tune(
            model, latents, conditioning, settings, NODE, caption=caption, resume=resume_from, on_checkpoint=checkpoint
        )
        if save_name.strip():
            try:
                save_tuned_weights(result.weights, save_name, torch.float16)
            except (OSError, ValueError) as error:  # the tune is kept: its outputs still go downstream
                message = (
                    f"{NODE}: the tune finished, but saving it as {save_name!r} failed ({error}). The tuned MODEL "
                    "and tuned_weights are passed on; save them with TAV Save Tuned Weights."
                )
                logging.error(message)
                show_on_node(message)
        curve = torch.from_numpy(draw_loss_curve(result.losses)).float().div(255).unsqueeze(0)
        return io.NodeOutput(result.model, result.weights, curve)
