"""Make-A-Video's pseudo-3D convolution (Inflate UNet's temporal_conv pseudo3d): exact identity at init, per-video
locality, the computation itself, tuning, and its tuned-weights files (also those written before the option)."""

import json

import pytest
import torch
from comfyui_tune_a_video.comfy_glue.one_shot_tune import tune
from comfyui_tune_a_video.comfy_glue.unet_inflation import inflate_model, inflation_of, temporal_layers_of
from comfyui_tune_a_video.nodes.inflate_unet import NODE as INFLATE
from comfyui_tune_a_video.nodes.inflate_unet import InflateUNet
from comfyui_tune_a_video.nodes.one_shot_tune import NODE as TUNE
from comfyui_tune_a_video.nodes.tuned_weights_io import LoadTunedWeights, SaveTunedWeights
from comfyui_tune_a_video.tav_core.errors import TAVInputError
from comfyui_tune_a_video.tav_core.inflation_config import (
    AttentionMode,
    GroupNormMode,
    InflationConfig,
    TemporalConvMode,
)
from comfyui_tune_a_video.tav_core.temporal_conv import TemporalConv
from comfyui_tune_a_video.tav_core.tuned_weights_file import to_file_contents
from comfyui_tune_a_video.tav_core.tuning import CheckpointScope, TuneSettings
from safetensors.torch import save_file
from tav_dev.tiny_models import CONTEXT_DIM, fill_seeded, text_cond, tiny_unet
from tav_dev.unet_harness import apply_unet, denoise_via_sampler, randomize_temporal, seeded_tuned_weights

FRAMES, SIZE, SIGMA = 4, 8, 2.0
PSEUDO3D = TemporalConvMode.PSEUDO3D
# Only the temporal convolutions connect frames: no cross-frame attention, no temporal attention, per-frame norms.
CONVS_ONLY = dict(attention=AttentionMode.PER_FRAME, temporal_layers=False, temporal_conv=PSEUDO3D)


def video(seed: int, frames: int = FRAMES, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(frames, 4, SIZE, SIZE, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def context(batch: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    one = torch.randn(1, 77, CONTEXT_DIM, generator=torch.Generator().manual_seed(0), dtype=dtype)
    return one.expand(batch, -1, -1).contiguous()


def inflated(base, **settings):
    return inflate_model(base, InflationConfig(**settings), INFLATE)


def random_conv(channels: int, seed: int, dtype: torch.dtype = torch.float64) -> TemporalConv:
    conv = TemporalConv(channels, dtype=dtype)
    fill_seeded(conv, seed)
    return conv


@pytest.fixture(scope="module")
def sd1():
    return tiny_unet("sd1", seed=0)


# The module itself


def test_the_convolution_is_a_zero_padded_conv_over_each_videos_frames():
    """Against a naive loop: out[v, t] = b + sum_k W[:, :, k] @ x[v, t + k - 1], W = conv_weight(), zero outside."""
    videos, frames, channels = 2, 5, 6
    conv = random_conv(channels, seed=1)
    x = torch.randn(videos * frames, channels, 3, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    weight, bias = conv.conv_weight(), conv.delta.bias
    assert torch.equal(weight[:, :, 1] - conv.delta.weight[:, :, 1], torch.eye(channels, dtype=torch.float64))
    expected = torch.empty_like(x)
    for v in range(videos):
        for t in range(frames):
            out = bias.view(-1, 1, 1).expand(-1, 3, 4).clone()
            for k in range(3):
                source = t + k - 1
                if 0 <= source < frames:
                    out += torch.einsum("oc,chw->ohw", weight[:, :, k], x[v * frames + source])
            expected[v * frames + t] = out
    torch.testing.assert_close(conv(x, videos), expected, atol=1e-12, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_a_fresh_convolution_is_the_identity_bitwise_in_the_inputs_layout(dtype, memory_format):
    conv = TemporalConv(8, dtype=dtype)
    conv.initialize()
    x = torch.randn(2 * 3, 8, 4, 5, dtype=dtype).contiguous(memory_format=memory_format)
    out = conv(x, 2)
    assert torch.equal(out, x)
    assert out.is_contiguous(memory_format=memory_format)


def test_the_convolution_never_mixes_videos():
    conv = random_conv(4, seed=3)
    x = torch.randn(3 * 4, 4, 2, 2, dtype=torch.float64)
    changed = x.clone()
    changed[4:8] += 1.0  # video 1 of 0, 1, 2
    before, after = conv(x, 3), conv(changed, 3)
    assert torch.equal(before[:4], after[:4]) and torch.equal(before[8:], after[8:])
    assert not torch.allclose(before[4:8], after[4:8])


# Inflation


def test_the_convolutions_follow_every_resnet_3x3_conv_and_nothing_else(sd1):
    model = inflated(sd1, temporal_conv=PSEUDO3D)
    sites = inflation_of(model).sites
    resnets = [path for path, layer in sites.layers if type(layer).__name__ == "ResBlock"]
    expected = {f"{path}.{conv}.forward" for path in resnets for conv in ("in_layers.2", "out_layers.3")}
    patched = {key for key in model.object_patches if ".in_layers." in key or ".out_layers." in key}
    assert patched == expected
    assert not [key for key in model.object_patches if "skip_connection" in key]
    assert any(not isinstance(m.skip_connection, torch.nn.Identity) for m in sd1.model.diffusion_model.modules()
               if type(m).__name__ == "ResBlock")  # the tiny UNet has a 1x1 skip convolution to leave alone
    assert set(temporal_layers_of(model).convs) == {path.removeprefix("diffusion_model.").replace(".", "_")
                                                    for path, _ in sites.resnet_convs}


def test_fresh_pseudo3d_is_the_image_model_exactly_fp64():
    base = tiny_unet("sd1", seed=4, dtype=torch.float64)
    model = inflated(base, **CONVS_ONLY)
    calls = []
    convs = temporal_layers_of(model).convs.values()
    hooks = [conv.register_forward_hook(lambda *_: calls.append(1)) for conv in convs]
    x, ctx = video(5, dtype=torch.float64), context(FRAMES, torch.float64)
    try:
        video_out = apply_unet(model, x, SIGMA, ctx, [0])
    finally:
        for hook in hooks:
            hook.remove()
    assert video_out.dtype == torch.float64 and len(calls) == len(inflation_of(model).sites.resnet_convs)
    assert torch.equal(video_out, apply_unet(base, x, SIGMA, ctx, [0]))
    frame_by_frame = torch.cat([apply_unet(base, x[i : i + 1], SIGMA, ctx[:1], [0]) for i in range(FRAMES)])
    torch.testing.assert_close(video_out, frame_by_frame, atol=1e-12, rtol=0)


def test_fresh_pseudo3d_changes_nothing_of_the_default_inflation(sd1):
    x = video(6)
    plain = apply_unet(inflated(sd1), x, SIGMA, context(FRAMES), [0])
    assert torch.equal(apply_unet(inflated(sd1, temporal_conv=PSEUDO3D), x, SIGMA, context(FRAMES), [0]), plain)


def test_videos_of_a_cond_uncond_batch_never_mix(sd1):
    model = inflated(sd1, **CONVS_ONLY)
    randomize_temporal(model, seed=7)
    a, b = video(8), video(9)
    changed_b = b.clone()
    changed_b[3] += 1.0
    before = apply_unet(model, torch.cat([a, b]), SIGMA, context(2 * FRAMES), [1, 0])
    after = apply_unet(model, torch.cat([a, changed_b]), SIGMA, context(2 * FRAMES), [1, 0])
    assert torch.equal(after[:FRAMES], before[:FRAMES])
    assert not torch.allclose(after[FRAMES], before[FRAMES], atol=1e-4)  # video 2's frame 0 sees its frame 3
    alone_a = apply_unet(model, a, SIGMA, context(FRAMES), [0])
    torch.testing.assert_close(before[:FRAMES], alone_a, atol=1e-5, rtol=1e-5)


def test_cond_and_uncond_run_alike_joint_or_split(sd1, monkeypatch):
    model = inflated(sd1, temporal_conv=PSEUDO3D)
    randomize_temporal(model, seed=10)
    positive, negative = text_cond("sd1", 1), text_cond("sd1", 2)
    latent = video(11)
    joint = denoise_via_sampler(model, latent, SIGMA, positive, negative, cfg=5.0)
    monkeypatch.setattr(model.model, "memory_required", lambda *args, **kwargs: float("inf"))
    split = denoise_via_sampler(model, latent, SIGMA, positive, negative, cfg=5.0)
    torch.testing.assert_close(joint, split, atol=2e-3, rtol=1e-4)  # the image model's own batching noise


def test_the_users_model_is_never_changed(sd1):
    weights = {k: v.clone() for k, v in sd1.model.state_dict().items()}
    x = video(12)
    before = apply_unet(sd1, x, SIGMA, context(FRAMES), [0])
    model = inflated(sd1, temporal_conv=PSEUDO3D)
    randomize_temporal(model, seed=13)
    assert not torch.allclose(apply_unet(model, x, SIGMA, context(FRAMES), [0]), before, atol=1e-4)
    assert torch.equal(apply_unet(sd1, x, SIGMA, context(FRAMES), [0]), before)
    assert all(torch.equal(value, weights[key]) for key, value in sd1.model.state_dict().items())
    assert not sd1.object_patches and temporal_layers_of(sd1) is None


def test_the_node_offers_temporal_conv_last_with_none_as_default(sd1):
    last = InflateUNet.define_schema().inputs[-1]
    assert last.id == "temporal_conv" and last.default == "none" and last.optional and "Make-A-Video" in last.tooltip
    (model,) = InflateUNet.execute(sd1, "per_frame", False, "none", "per_frame", temporal_conv="pseudo3d").result
    assert inflation_of(model).config == InflationConfig(**CONVS_ONLY)
    (plain,) = InflateUNet.execute(sd1, "sparse_causal", True, "none", "per_frame").result
    assert inflation_of(plain).config.temporal_conv == TemporalConvMode.NONE and not temporal_layers_of(plain).convs


# Tuning and files


def moving_square() -> dict:
    samples = torch.full((FRAMES, 4, SIZE, SIZE), -0.5)
    for f in range(FRAMES):
        samples[f, :, 2:5, 1 + f : 4 + f] = 1.0
    return {"samples": samples}


@pytest.mark.parametrize("checkpointing", [CheckpointScope.BLOCKS, CheckpointScope.OFF])
def test_one_step_gives_every_temporal_convolution_weight_a_gradient(sd1, checkpointing):
    model = inflated(sd1, temporal_conv=PSEUDO3D)
    base_weights = {k: v.clone() for k, v in sd1.model.state_dict().items()}
    x = moving_square()["samples"]
    before = apply_unet(model, x, SIGMA, context(FRAMES), [0])
    settings = TuneSettings(steps=1, learning_rate=1e-3, gradient_checkpointing=checkpointing)
    result = tune(model, moving_square(), text_cond("sd1", 1), settings, TUNE)
    convs = {key: value for key, value in result.weights.temporal.items() if key.startswith("convs.")}
    assert len(convs) == 2 * len(inflation_of(model).sites.resnet_convs)
    for key, value in convs.items():  # every element starts at 0: AdamW moves exactly those with a gradient
        moved = float((value != 0).float().mean())  # an element's gradient can be exactly 0 by chance, not a tensor's
        assert moved >= 0.95, f"{key}: {int((value == 0).sum())} of {value.numel()} elements got no gradient"
    assert all(not value.any() for value in temporal_layers_of(model).convs.state_dict().values())
    assert torch.equal(apply_unet(model, x, SIGMA, context(FRAMES), [0]), before)
    assert all(torch.equal(value, base_weights[key]) for key, value in sd1.model.state_dict().items())


@pytest.mark.parametrize("temporal_layers", [True, False])
def test_saved_and_loaded_tunes_predict_what_the_tune_did(sd1, weights_folder, temporal_layers):
    model = inflated(sd1, temporal_layers=temporal_layers, temporal_conv=PSEUDO3D)
    result = tune(model, moving_square(), text_cond("sd1", 1), TuneSettings(steps=3, learning_rate=1e-2), TUNE)
    SaveTunedWeights.execute(result.weights, "pseudo3d", "fp32")
    loaded, weights = LoadTunedWeights.execute(tiny_unet("sd1", seed=0), "pseudo3d.safetensors", False).result
    assert weights.inflation == inflation_of(model).config
    assert any(key.startswith("layers.") for key in weights.temporal) == temporal_layers
    x = moving_square()["samples"]
    expected = apply_unet(result.model, x, SIGMA, context(FRAMES), [0])
    assert not torch.allclose(expected, apply_unet(model, x, SIGMA, context(FRAMES), [0]), atol=1e-4)
    torch.testing.assert_close(apply_unet(loaded, x, SIGMA, context(FRAMES), [0]), expected, atol=1e-6, rtol=1e-6)


def write(path, tensors: dict, metadata: dict) -> None:
    save_file({key: value.contiguous() for key, value in tensors.items()}, str(path), metadata=metadata)


def test_files_written_before_temporal_conv_still_load(sd1, weights_folder):
    tensors, metadata = to_file_contents(seeded_tuned_weights(sd1, seed=14), torch.float32)
    settings = json.loads(metadata["inflation"])
    old_settings = {key: value for key, value in settings.items() if key != "temporal_conv"}
    assert settings["temporal_conv"] == "none" and len(old_settings) == len(settings) - 1
    write(weights_folder / "new.safetensors", tensors, metadata)
    write(weights_folder / "old.safetensors", tensors, {**metadata, "inflation": json.dumps(old_settings)})
    old_model, old_weights = LoadTunedWeights.execute(tiny_unet("sd1", seed=0), "old.safetensors", False).result
    new_model, _ = LoadTunedWeights.execute(tiny_unet("sd1", seed=0), "new.safetensors", False).result
    assert old_weights.inflation == InflationConfig()
    x = video(15)
    assert torch.equal(apply_unet(old_model, x, SIGMA, context(FRAMES), [0]),
                       apply_unet(new_model, x, SIGMA, context(FRAMES), [0]))


NO_LAYERS = dict(temporal_layers=False, temporal_conv="none")


@pytest.mark.parametrize(
    ("tuned_with", "recorded", "extra", "problem"),
    [
        ({"temporal_conv": PSEUDO3D}, {"temporal_conv": "none"}, {},
         "holds temporal convolutions, but its inflation settings say temporal_conv=none"),
        ({"temporal_conv": PSEUDO3D}, {"temporal_layers": False}, {},
         "holds temporal layers, but its inflation settings say temporal_layers=False"),
        (NO_LAYERS, NO_LAYERS, {"tav_temporal.extra.weight": torch.zeros(2)},
         r"its tensors do not fit this model \(1 problems: unexpected extra\.weight"),
    ],
    ids=["convolutions without temporal_conv", "attention without temporal_layers", "layers the model has not"],
)
def test_temporal_tensors_the_settings_do_not_add_are_refused(sd1, weights_folder, tuned_with, recorded, extra,
                                                             problem):
    weights = seeded_tuned_weights(sd1, 16, InflationConfig(**tuned_with))
    tensors, metadata = to_file_contents(weights, torch.float16)
    settings = {**json.loads(metadata["inflation"]), **recorded}
    write(weights_folder / "bad.safetensors", {**tensors, **extra}, {**metadata, "inflation": json.dumps(settings)})
    with pytest.raises(TAVInputError, match=r"TAV Load Tuned Weights: input 'weights_name': .*" + problem):
        LoadTunedWeights.execute(tiny_unet("sd1", seed=0), "bad.safetensors", False)


def test_reference_format_refuses_pseudo3d(sd1, weights_folder):
    config = InflationConfig(groupnorm=GroupNormMode.PER_VIDEO, temporal_conv=PSEUDO3D)  # else the reference's
    model = inflate_model(sd1, config, INFLATE)
    result = tune(model, moving_square(), text_cond("sd1", 1), TuneSettings(steps=1), TUNE)
    with pytest.raises(TAVInputError, match=r"TAV Save Tuned Weights: input 'tuned_weights': .*temporal_conv "
                                            r"pseudo3d; the reference's UNet3D has no temporal convolutions"):
        SaveTunedWeights.execute(result.weights, "ref", "fp32", "reference", result.model)
    assert not list(weights_folder.rglob("*"))
