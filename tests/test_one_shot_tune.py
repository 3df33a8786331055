"""One-Shot Tune on tiny ComfyUI UNets: learning, gradients, safety of the base, weight files, Cancel."""

import math
from functools import partial

import comfy.ldm.modules.attention as comfy_attention
import comfy.model_management
import comfy.utils
import pytest
import torch
from comfyui_tune_a_video.comfy_glue.ddim_editing import invert_video, sample_video
from comfyui_tune_a_video.comfy_glue.one_shot_tune import TrainingForward, tune
from comfyui_tune_a_video.comfy_glue.unet_inflation import inflate_model, inflation_of, temporal_layers_of
from comfyui_tune_a_video.nodes.inflate_unet import NODE as INFLATE
from comfyui_tune_a_video.nodes.one_shot_tune import NODE as TUNE
from comfyui_tune_a_video.nodes.one_shot_tune import OneShotTune
from comfyui_tune_a_video.nodes.tuned_weights_io import LoadTunedWeights, SaveTunedWeights
from comfyui_tune_a_video.tav_core.errors import TAVInputError
from comfyui_tune_a_video.tav_core.inflation_config import InflationConfig
from comfyui_tune_a_video.tav_core.tuning import ADAMW_BETAS, WEIGHT_DECAY, CheckpointScope, TuneSettings
from comfyui_tune_a_video.tav_core.weight_samples import FINGERPRINT_SAMPLES, fingerprint_indices
from tav_dev.tiny_models import CONTEXT_DIM, text_cond, tiny_unet
from tav_dev.unet_harness import apply_unet, progress_hook, randomize_temporal

FRAMES, SIZE = 4, 8


def moving_square_video(frames: int = FRAMES) -> dict:
    """A latent 'video': a bright square sliding right over a dark background, one pixel per frame."""
    samples = torch.full((frames, 4, SIZE, SIZE), -0.5)
    for f in range(frames):
        samples[f, :, 2:5, 1 + f : 4 + f] = 1.0
    return {"samples": samples}


def context(batch: int) -> torch.Tensor:
    return torch.randn(1, 77, CONTEXT_DIM, generator=torch.Generator().manual_seed(0)).expand(batch, -1, -1)


def video_model(kind: str = "sd1", seed: int = 0, live_temporal: bool = False):
    model = inflate_model(tiny_unet(kind, seed), InflationConfig(), INFLATE)
    if live_temporal:
        randomize_temporal(model, seed=21)
    return model


@pytest.mark.parametrize("kind", ["sd1", "sd2"])  # epsilon and v-prediction
def test_loss_falls_clearly(kind):
    model = video_model(kind)
    result = tune(model, moving_square_video(), text_cond(kind, 1), TuneSettings(steps=60, learning_rate=1e-2), TUNE)
    first, last = sum(result.losses[:10]) / 10, sum(result.losses[-10:]) / 10
    assert len(result.losses) == 60
    # A random tiny UNet can only memorise so much through its to_q and temporal layers: a 25 % drop is clear.
    assert last < 0.75 * first, (first, last)


@pytest.mark.parametrize("checkpointing", list(CheckpointScope))
def test_one_step_trains_every_parameter_and_nothing_else(checkpointing):
    model = video_model(live_temporal=True)  # non-zero temporal output projections, so q/k/v get gradient too
    base_weights = {k: v.clone() for k, v in model.model.state_dict().items()}
    temporal_before = {k: v.clone() for k, v in temporal_layers_of(model).state_dict().items()}
    x = moving_square_video()["samples"]
    output_before = apply_unet(model, x, 2.0, context(FRAMES), [0])
    lr = 1e-3
    settings = TuneSettings(steps=1, learning_rate=lr, gradient_checkpointing=checkpointing)
    result = tune(model, moving_square_video(), text_cond("sd1", 1), settings, TUNE)

    deltas = result.weights.q_deltas
    blocks = {key.split(".")[1] for key in deltas}
    assert blocks == {"input_blocks", "middle_block", "output_blocks"}
    # AdamW's first step moves an element by lr * g / (|g| + 1e-8): zero exactly when its gradient is zero.
    for key, delta in deltas.items():
        assert delta.abs().max() > 0, f"{key} got no gradient"  # deltas start at 0, so decay cannot move them
    for key, after in result.weights.temporal.items():
        decayed = temporal_before[key] * (1 - lr * WEIGHT_DECAY)  # what weight decay alone would leave
        assert (after - decayed).abs().max() > 1e-7, f"temporal {key} got no gradient"

    for key, value in model.model.state_dict().items():
        assert torch.equal(value, base_weights[key]), key
    for key, value in temporal_layers_of(model).state_dict().items():
        assert torch.equal(value, temporal_before[key]), key
    assert torch.equal(apply_unet(model, x, 2.0, context(FRAMES), [0]), output_before)
    assert ADAMW_BETAS == (0.9, 0.999) and WEIGHT_DECAY == 1e-2


class BlockScaledCrossAttention:
    """A block-keyed attn2 replacement, like IP-Adapter's: each block scales its output differently."""

    def __init__(self, scale: float) -> None:
        self.scale = scale

    def __call__(self, q, k, v, extra_options):
        return comfy_attention.attention_basic(q, k, v, extra_options["n_heads"]) * self.scale


def block_keyed_model():
    """An inflated model whose every block scales its cross-attention differently (as IP-Adapter's patches do)."""
    model = video_model(live_temporal=True)
    for number, site in enumerate(inflation_of(model).sites.transformer_blocks):
        model.set_model_attn2_replace(BlockScaledCrossAttention(0.5 + 0.25 * number), *site.key)
    return model


def tuned_losses(model=None, **settings) -> torch.Tensor:
    settings = TuneSettings(steps=8, learning_rate=1e-3, seed=5, **settings)
    model = block_keyed_model() if model is None else model
    return torch.tensor(tune(model, moving_square_video(), text_cond("sd1", 1), settings, TUNE).losses)


def test_checkpointing_does_not_change_the_losses():
    """Also with block-keyed patches, which see a stale block key if recomputation is done naively."""
    without = tuned_losses(gradient_checkpointing=CheckpointScope.OFF)
    for scope in (CheckpointScope.BLOCKS, CheckpointScope.TRANSFORMERS):
        torch.testing.assert_close(tuned_losses(gradient_checkpointing=scope), without, atol=1e-5, rtol=1e-5)


def test_channels_last_reaches_the_unet_and_does_not_change_the_losses():
    model = block_keyed_model()
    layouts = []
    first_conv = model.model.diffusion_model.input_blocks[0][0]
    hook = first_conv.register_forward_pre_hook(
        lambda module, args: layouts.append(args[0].is_contiguous(memory_format=torch.channels_last))
    )
    try:
        channels_last = tuned_losses(model, channels_last=True)
    finally:
        hook.remove()
    assert layouts and all(layouts)
    torch.testing.assert_close(channels_last, tuned_losses(), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("scope", [CheckpointScope.BLOCKS, CheckpointScope.OFF])
def test_tuning_trains_where_comfyui_picks_sub_quadratic_attention(monkeypatch, scope):
    """ComfyUI's sub-quadratic attention (its CPU default) chunks by the memory free at each call, here
    changing from call to call: its chunked path cannot be differentiated, and a recomputed layer would
    chunk unlike its forward pass (torch refused that at 512x512). Tuning runs on SDPA instead."""
    monkeypatch.setattr(comfy_attention, "optimized_attention", comfy_attention.attention_sub_quad)
    monkeypatch.setattr(comfy_attention, "optimized_attention_masked", comfy_attention.attention_sub_quad)
    free_memory = torch.Generator().manual_seed(0)

    def fluctuating_free_memory(device=None, torch_free_too=False):
        free = 1e12 if torch.rand(1, generator=free_memory).item() < 0.5 else 1.0
        return (free, free) if torch_free_too else free

    monkeypatch.setattr(comfy.model_management, "get_free_memory", fluctuating_free_memory)
    video = {"samples": torch.randn(2, 4, 32, 32, generator=torch.Generator().manual_seed(1))}  # 1024 tokens
    settings = TuneSettings(steps=2, learning_rate=1e-3, gradient_checkpointing=scope)
    losses = tune(video_model(), video, text_cond("sd1", 1), settings, TUNE).losses
    assert len(losses) == 2 and all(math.isfinite(loss) for loss in losses)


def test_tuning_keeps_the_users_attention_override_and_hands_it_trainable_attention(monkeypatch):
    """An override the user's graph set on the model still decides while tuning, and is handed SDPA in place
    of ComfyUI's sub-quadratic choice (which it would otherwise run untrainably)."""
    monkeypatch.setattr(comfy_attention, "optimized_attention", comfy_attention.attention_sub_quad)
    monkeypatch.setattr(comfy_attention, "optimized_attention_masked", comfy_attention.attention_sub_quad)
    monkeypatch.setattr(comfy.model_management, "get_free_memory", lambda device=None, torch_free_too=False: (
        (1.0, 1.0) if torch_free_too else 1.0  # so little free memory that sub-quadratic attention chunks
    ))
    handed = []

    def users_override(attention, *args, **kwargs):
        handed.append(getattr(attention, "__wrapped__", attention))
        return attention(*args, **kwargs)

    model = video_model()
    model.model_options["transformer_options"]["optimized_attention_override"] = users_override
    video = {"samples": torch.randn(2, 4, 32, 32, generator=torch.Generator().manual_seed(1))}  # 1024 tokens
    losses = tune(model, video, text_cond("sd1", 1), TuneSettings(steps=2, learning_rate=1e-3), TUNE).losses
    assert len(losses) == 2 and all(math.isfinite(loss) for loss in losses)
    assert handed and set(handed) == {comfy_attention.attention_pytorch.__wrapped__}
    assert model.model_options["transformer_options"]["optimized_attention_override"] is users_override


def test_compiled_layers_train_alike_in_whole_graphs(monkeypatch):
    """torch.compile'd layers (checkpointed or not) give the eager losses, each layer traced into one graph.

    With the CPU's attention as ComfyUI picks it (sub-quadratic, which tuning runs as SDPA through its
    attention override, so the override is traced too). The compiled graphs run through AOTAutograd without
    code generation (backend aot_eager): Dynamo's tracing, guards and checkpointing are what this pack
    controls; inductor's kernels are torch's and take minutes to build on a 2-core CPU (the benchmark times
    them on a GPU).
    """
    from torch._dynamo.utils import counters

    monkeypatch.setattr(torch, "compile", partial(torch.compile, backend="aot_eager"))
    eager = tuned_losses()
    for scope in (CheckpointScope.BLOCKS, CheckpointScope.OFF):
        torch._dynamo.reset()
        counters.clear()
        compiled = tuned_losses(gradient_checkpointing=scope, compile=True)
        torch.testing.assert_close(compiled, eager, atol=1e-5, rtol=1e-5)
        assert counters["stats"]["unique_graphs"] > 0, "nothing was compiled"
        assert not counters["graph_break"], dict(counters["graph_break"])
    torch._dynamo.reset()


def test_tuned_model_predicts_differently_and_base_stays_bitwise(weights_folder):
    model = video_model()
    x = moving_square_video()["samples"]
    before = apply_unet(model, x, 2.0, context(FRAMES), [0])
    tuned, weights, curve = OneShotTune.execute(
        model, moving_square_video(), text_cond("sd1", 1), 5, 1e-3, 0, "blocks", "auto",
        save_name="", caption="a square",
    ).result
    assert curve.shape[0] == 1 and curve.shape[-1] == 3 and 0 <= float(curve.min()) and float(curve.max()) <= 1
    assert not torch.allclose(apply_unet(tuned, x, 2.0, context(FRAMES), [0]), before, atol=1e-4)
    assert torch.equal(apply_unet(model, x, 2.0, context(FRAMES), [0]), before)
    assert weights.info["caption"] == "a square" and weights.info["frames"] == str(FRAMES)
    assert not list(weights_folder.iterdir())


def test_tuned_model_runs_in_the_models_dtype_after_training_in_another():
    """bf16 training (a GPU's default) on an fp32 model: the tuned model's temporal layers are fp32 like its UNet.

    The trainer's compute dtype sits on the shared BaseModel until another model loads; building the tuned
    layers from it made every edit after a tune fail on a dtype mismatch.
    """
    base = tiny_unet("sd1", 0)
    model = inflate_model(base, InflationConfig(), INFLATE)
    x = moving_square_video()["samples"]
    result = tune(model, moving_square_video(), text_cond("sd1", 1), TuneSettings(steps=2, precision="bf16"), TUNE)
    assert {p.dtype for p in temporal_layers_of(result.model).parameters()} == {torch.float32}
    tuned_prediction = apply_unet(result.model, x, 2.0, context(FRAMES), [0])
    assert tuned_prediction.dtype == torch.float32 and torch.isfinite(tuned_prediction).all()
    reinflated = inflate_model(base, InflationConfig(), INFLATE)  # the same BaseModel, right after the tune
    assert {p.dtype for p in temporal_layers_of(reinflated).parameters()} == {torch.float32}


def test_tuning_leaves_nothing_of_its_trainer_loaded():
    """The trainer and its fp32 copy of the temporal layers are unloaded when tuning ends, their patches undone."""
    model = video_model()
    x = moving_square_video()["samples"]
    apply_unet(model, x, 2.0, context(FRAMES), [0])
    loaded_before = {id(loaded.model) for loaded in comfy.model_management.current_loaded_models}
    tune(model, moving_square_video(), text_cond("sd1", 1), TuneSettings(steps=2, precision="bf16"), TUNE)
    loaded_after = {id(loaded.model) for loaded in comfy.model_management.current_loaded_models}
    assert loaded_after <= loaded_before
    unet = model.model.diffusion_model
    assert unet is model.model.diffusion_model and model.model.manual_cast_dtype is None  # not the trainer's bf16
    assert not [m for m in unet.modules() if isinstance(vars(m).get("forward"), TrainingForward)]
    assert "optimized_attention_override" not in model.model_options["transformer_options"]


def test_tuned_model_edits_alike_when_comfyui_loads_it_partially(monkeypatch):
    """ComfyUI's partial (lowvram) loading, forced here on the CPU: the tuned to_q deltas are applied layer by
    layer as weights are cast, and inversion plus sampling give exactly the fully loaded result."""
    video, cond = moving_square_video(), text_cond("sd1", 1)
    tuned = tune(video_model(live_temporal=True), video, cond, TuneSettings(steps=3, learning_rate=1e-2), TUNE).model

    def edit() -> torch.Tensor:
        inverted = invert_video(tuned, video, cond, 3, 1.0, "test")
        return sample_video(tuned, cond, cond, inverted, 3, 5.0, 0.0, 0, "test")["samples"]

    fully_loaded = edit()
    comfy.model_management.unload_all_models()
    monkeypatch.setattr(comfy.model_management, "is_device_cpu", lambda device: False)
    monkeypatch.setattr(comfy.model_management, "vram_state", comfy.model_management.VRAMState.NO_VRAM)
    try:
        partially_loaded = edit()
        assert tuned.model.model_lowvram and tuned.lowvram_patch_counter() > 0
    finally:
        comfy.model_management.unload_all_models()
    torch.testing.assert_close(partially_loaded, fully_loaded, rtol=0, atol=1e-5)


@pytest.mark.parametrize(("model_dtype", "precision"), [(torch.float16, "bf16"), (torch.bfloat16, "fp32")])
def test_half_precision_models_tune_and_edit(model_dtype, precision):
    """A GPU's usual pairing (fp16 checkpoint, bf16 training) and the reverse, through inversion and sampling."""
    model = inflate_model(tiny_unet("sd1", 0, dtype=model_dtype), InflationConfig(), INFLATE)
    video, cond = moving_square_video(), text_cond("sd1", 1)
    tuned = tune(model, video, cond, TuneSettings(steps=2, precision=precision), TUNE).model
    assert {p.dtype for p in temporal_layers_of(tuned).parameters()} == {model_dtype}
    inverted = invert_video(tuned, video, cond, 2, 1.0, "test")
    edited = sample_video(tuned, cond, cond, inverted, 2, 5.0, 0.0, 0, "test")["samples"]
    assert edited.shape == video["samples"].shape and torch.isfinite(edited).all()


def test_save_load_round_trip_and_base_checks(weights_folder):
    model = video_model(seed=0)
    tuned, weights, _ = OneShotTune.execute(
        model, moving_square_video(), text_cond("sd1", 1), 4, 1e-3, 0, "blocks", "auto", save_name="clips/square"
    ).result
    saved = weights_folder / "clips" / "square.safetensors"
    assert saved.is_file()
    assert not [p for p in weights_folder.rglob("*") if p.name.endswith(".partial")]

    fresh_base = tiny_unet("sd1", seed=0)  # the same checkpoint, loaded again
    loaded, _ = LoadTunedWeights.execute(fresh_base, "clips/square.safetensors", False).result
    x = moving_square_video()["samples"]
    expected = apply_unet(tuned, x, 2.0, context(FRAMES), [0])
    got = apply_unet(loaded, x, 2.0, context(FRAMES), [0])
    torch.testing.assert_close(got, expected, atol=2e-3 * float(expected.abs().max()), rtol=2e-3)

    other_base = tiny_unet("sd1", seed=1)
    mismatch = (r"TAV Load Tuned Weights: input 'model': clips/square.safetensors \(.*\) was tuned on the same kind "
                r"of UNet \(SD15 UNet .*\) but with other weights")
    with pytest.raises(TAVInputError, match=mismatch):
        LoadTunedWeights.execute(other_base, "clips/square.safetensors", False)
    allowed, _ = LoadTunedWeights.execute(other_base, "clips/square.safetensors", True).result
    assert allowed is not None
    with pytest.raises(TAVInputError, match=r"tuned on a different kind of UNet: SD15 UNet .*this MODEL is a SD20"):
        LoadTunedWeights.execute(tiny_unet("sd2", seed=0), "clips/square.safetensors", True)

    SaveTunedWeights.execute(weights, "square32", "fp32")
    assert (weights_folder / "square32.safetensors").stat().st_size > saved.stat().st_size


@pytest.mark.parametrize("numel", [1, 5, 64, 1000, 2**24 + 1, 2560 * 1280 * 9, 2**31 + 7])
def test_fingerprint_samples_stay_inside_large_weights(numel):
    """SD1.5's 2560x1280x3x3 convolutions: a float32 spacing put the last sample one past the end."""
    index = fingerprint_indices(numel)
    assert len(index) == min(FINGERPRINT_SAMPLES, numel)
    assert index[0] == 0 and index[-1] == numel - 1
    assert bool((index[1:] > index[:-1]).all())


@pytest.mark.parametrize("name", ["../../x", "/etc/passwd", "a/../../b", ".hidden", "x\\..\\..\\y"])
def test_names_never_escape_the_folder(weights_folder, name):
    model = video_model()
    _, weights, _ = OneShotTune.execute(
        model, moving_square_video(), text_cond("sd1", 1), 1, 1e-3, 0, "off", "auto"
    ).result
    with pytest.raises(TAVInputError, match="TAV Save Tuned Weights: input 'save_name'"):
        SaveTunedWeights.execute(weights, name, "fp16")
    with pytest.raises(TAVInputError, match="TAV Load Tuned Weights: input 'weights_name'"):
        LoadTunedWeights.execute(model, name, False)
    assert not list(weights_folder.parent.rglob("x*")) and not list(weights_folder.rglob("*"))


def test_cancel_stops_leaves_no_file_and_an_intact_base(weights_folder):
    model = video_model()
    weights_before = {k: v.clone() for k, v in model.model.state_dict().items()}
    seen = []

    def hook(value, total, preview, node_id=None):
        seen.append(value)
        if value == 2:
            comfy.model_management.interrupt_current_processing(True)

    with progress_hook(hook), pytest.raises(comfy.model_management.InterruptProcessingException):
        OneShotTune.execute(
            model, moving_square_video(), text_cond("sd1", 1), 50, 1e-3, 0, "blocks", "auto", save_name="cancelled"
        )
    assert seen == [1, 2]  # stopped within one step of the Cancel
    assert not list(weights_folder.rglob("*"))
    for key, value in model.model.state_dict().items():
        assert torch.equal(value, weights_before[key]), key


@pytest.mark.parametrize(
    ("latent", "steps", "lr", "input_name", "message"),
    [
        ({"samples": torch.zeros(1, 4, SIZE, SIZE)}, 5, 1e-4, "latents", "at least 2 frames"),
        ({"samples": torch.zeros(4, 16, SIZE, SIZE)}, 5, 1e-4, "latents", "16 latent channels"),
        (moving_square_video(), 0, 1e-4, "steps", "at least 1 step"),
        (moving_square_video(), 5, 0.0, "learning_rate", "above 0"),
        (moving_square_video(), 5, 1e30, "learning_rate", "diverged"),
    ],
)
def test_bad_inputs_name_the_node_and_input(latent, steps, lr, input_name, message):
    model = video_model()
    with pytest.raises(TAVInputError, match=rf"One-Shot Tune: input '{input_name}': .*{message}"):
        tune(model, latent, text_cond("sd1", 1), TuneSettings(steps=steps, learning_rate=lr), TUNE)


def test_sdxl_tunes_with_its_extra_conds():
    """SDXL's pooled text and size conditioning reach the UNet (its ADM input) through ComfyUI's conds."""
    model = video_model("sdxl")
    result = tune(model, moving_square_video(), text_cond("sdxl", 1), TuneSettings(steps=3, learning_rate=1e-3), TUNE)
    assert len(result.losses) == 3 and all(math.isfinite(loss) for loss in result.losses)
    assert any(delta.abs().max() > 0 for delta in result.weights.q_deltas.values())


def test_divergence_keeps_the_base_intact():
    model = video_model()
    weights_before = {k: v.clone() for k, v in model.model.state_dict().items()}
    with pytest.raises(TAVInputError, match=r"diverged: loss became (nan|inf) at step \d+"):
        tune(model, moving_square_video(), text_cond("sd1", 1), TuneSettings(steps=20, learning_rate=1e30), TUNE)
    for key, value in model.model.state_dict().items():
        assert torch.equal(value, weights_before[key]), key


def test_image_model_is_refused():
    with pytest.raises(TAVInputError, match="One-Shot Tune: input 'model': this MODEL is not inflated"):
        tune(tiny_unet("sd1"), moving_square_video(), text_cond("sd1", 1), TuneSettings(steps=1), TUNE)
