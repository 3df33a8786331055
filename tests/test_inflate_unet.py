"""Inflate UNet on tiny SD1/SD2/SDXL UNets built from ComfyUI's real classes."""

import pytest
import torch
from comfyui_tune_a_video.comfy_glue.unet_inflation import inflate_model, inflation_of
from comfyui_tune_a_video.nodes.inflate_unet import InflateUNet
from comfyui_tune_a_video.tav_core.errors import TAVInputError
from comfyui_tune_a_video.tav_core.inflation_config import (
    AttentionMode,
    GroupNormMode,
    InflationConfig,
    PositionEncoding,
)
from tav_dev.tiny_models import CONTEXT_DIM, text_cond, tiny_unet
from tav_dev.unet_harness import apply_unet, denoise_via_sampler, load_for_inference, randomize_temporal

import nodes as comfy_nodes

FRAMES, SIZE, SIGMA = 4, 8, 2.0


def video(seed: int, frames: int = FRAMES) -> torch.Tensor:
    return torch.randn(frames, 4, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


def context(seed: int, batch: int) -> torch.Tensor:
    one = torch.randn(1, 77, CONTEXT_DIM, generator=torch.Generator().manual_seed(seed))
    return one.expand(batch, -1, -1).contiguous()


def inflated(base, **settings):
    return inflate_model(base, InflationConfig(**settings), "Inflate UNet")


def isolated_settings():
    """No path by which frame j reaches frame i, unless j is 0."""
    return dict(attention=AttentionMode.FIRST_FRAME, temporal_layers=False, groupnorm=GroupNormMode.PER_FRAME)


@pytest.fixture(scope="module")
def sd1():
    return tiny_unet("sd1", seed=0)


def test_frame0_equals_image_model_with_per_frame_norm(sd1):
    x = video(1)
    image_out = apply_unet(sd1, x, SIGMA, context(0, FRAMES), [0])
    video_model = inflated(sd1, groupnorm=GroupNormMode.PER_FRAME)
    video_out = apply_unet(video_model, x, SIGMA, context(0, FRAMES), [0])
    torch.testing.assert_close(video_out[0], image_out[0], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(video_out[2], image_out[2], atol=1e-3)  # frame 2 attends to frames 0 and 1


def test_per_video_groupnorm_equals_torch_groupnorm_on_5d_video(sd1):
    video_model = inflated(sd1, groupnorm=GroupNormMode.PER_VIDEO)
    load_for_inference(video_model)
    seen = []
    hooks = [
        norm.register_forward_hook(lambda module, args, out: seen.append((module, args[0], out)))
        for _, norm in inflation_of(video_model).sites.resnet_norms
    ]
    try:
        x = torch.cat([video(2), video(3)])
        apply_unet(video_model, x, SIGMA, context(0, 2 * FRAMES), [1, 0])
    finally:
        for hook in hooks:
            hook.remove()
    assert len(seen) == len(inflation_of(video_model).sites.resnet_norms)
    for module, x_in, out in seen:
        reference = torch.nn.GroupNorm(module.num_groups, module.num_channels, eps=module.eps)
        reference.load_state_dict(module.state_dict())
        v, c, h, w = 2, x_in.shape[1], x_in.shape[2], x_in.shape[3]
        as_5d = x_in.view(v, FRAMES, c, h, w).transpose(1, 2)
        with torch.inference_mode():
            expected = reference(as_5d).transpose(1, 2).reshape(x_in.shape)
        torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("attention", list(AttentionMode))
def test_identical_frames_give_identical_frames_and_same_result_in_both_norm_modes(sd1, attention):
    x = video(4, frames=1).expand(FRAMES, -1, -1, -1).contiguous()
    outs = {}
    for groupnorm in GroupNormMode:
        video_model = inflated(sd1, attention=attention, groupnorm=groupnorm)
        randomize_temporal(video_model, seed=5)
        outs[groupnorm] = apply_unet(video_model, x, SIGMA, context(0, FRAMES), [0])
        for i in range(1, FRAMES):
            torch.testing.assert_close(outs[groupnorm][i], outs[groupnorm][0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(outs[GroupNormMode.PER_VIDEO], outs[GroupNormMode.PER_FRAME], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("pe", list(PositionEncoding))
def test_two_videos_in_one_batch_never_mix(sd1, pe):
    video_model = inflated(sd1, temporal_position_encoding=pe)
    randomize_temporal(video_model, seed=6)
    a, b = video(7), video(8)
    together = apply_unet(video_model, torch.cat([a, b]), SIGMA, context(0, 2 * FRAMES), [0, 0])
    alone_a = apply_unet(video_model, a, SIGMA, context(0, FRAMES), [0])
    alone_b = apply_unet(video_model, b, SIGMA, context(0, FRAMES), [0])
    torch.testing.assert_close(together, torch.cat([alone_a, alone_b]), atol=1e-5, rtol=1e-5)


def test_cond_uncond_joint_equals_split(sd1, monkeypatch):
    video_model = inflated(sd1)
    randomize_temporal(video_model, seed=9)
    positive, negative = text_cond("sd1", 1), text_cond("sd1", 2)
    latent = video(10)
    joint = denoise_via_sampler(video_model, latent, SIGMA, positive, negative, cfg=5.0)
    # ComfyUI runs cond and uncond as separate batches when a joint batch would not fit in memory.
    monkeypatch.setattr(video_model.model, "memory_required", lambda *args, **kwargs: float("inf"))
    split = denoise_via_sampler(video_model, latent, SIGMA, positive, negative, cfg=5.0)
    # The image model itself differs by ~2e-4 here (batched matmuls, x5 guidance, /0.18215 latent scale).
    torch.testing.assert_close(joint, split, atol=2e-3, rtol=1e-4)


def test_temporal_path_is_live_and_isolation_holds_without_it(sd1):
    x = video(11)
    changed = x.clone()
    changed[3] += 1.0
    live = inflated(sd1, **{**isolated_settings(), "temporal_layers": True})
    randomize_temporal(live, seed=12)
    before = apply_unet(live, x, SIGMA, context(0, FRAMES), [0])
    after = apply_unet(live, changed, SIGMA, context(0, FRAMES), [0])
    assert not torch.allclose(before[1], after[1], atol=1e-4)  # frame 1 sees frame 3 only through time

    isolated = inflated(sd1, **isolated_settings())
    before = apply_unet(isolated, x, SIGMA, context(0, FRAMES), [0])
    after = apply_unet(isolated, changed, SIGMA, context(0, FRAMES), [0])
    for i in (0, 1, 2):
        torch.testing.assert_close(before[i], after[i], atol=1e-6, rtol=1e-6)
    assert not torch.allclose(before[3], after[3], atol=1e-4)


def test_base_model_output_and_weights_unchanged(sd1):
    x = video(13)
    weights = {k: v.clone() for k, v in sd1.model.state_dict().items()}
    positive, negative = text_cond("sd1", 3), text_cond("sd1", 4)
    image_before = denoise_via_sampler(sd1, x, SIGMA, positive, negative, cfg=3.0)
    video_model = inflated(sd1)
    randomize_temporal(video_model, seed=14)
    video_out = denoise_via_sampler(video_model, x, SIGMA, positive, negative, cfg=3.0)
    image_after = denoise_via_sampler(sd1, x, SIGMA, positive, negative, cfg=3.0)
    assert not torch.allclose(video_out, image_before, atol=1e-4)
    torch.testing.assert_close(image_after, image_before, atol=0, rtol=0)
    after = sd1.model.state_dict()
    assert after.keys() == weights.keys()
    for key, value in weights.items():
        assert torch.equal(after[key], value), key
    assert not sd1.object_patches and sd1.get_attachment("tav_inflation") is None


@pytest.mark.parametrize("kind", ["sd1", "sd2", "sdxl"])
def test_every_unet_family_inflates_and_runs_through_stock_ksampler(kind):
    base = tiny_unet(kind, seed=1)
    (video_model,) = InflateUNet.execute(base, "sparse_causal", True, "sinusoidal", "per_video").result
    randomize_temporal(video_model, seed=2)
    latent = {"samples": torch.zeros(FRAMES, 4, SIZE, SIZE)}
    positive, negative = text_cond(kind, 5), text_cond(kind, 6)
    run = comfy_nodes.KSampler().sample
    with torch.inference_mode():
        (video_result,) = run(video_model, 7, 3, 4.0, "euler", "normal", positive, negative, latent, denoise=1.0)
        (image_result,) = run(base, 7, 3, 4.0, "euler", "normal", positive, negative, latent, denoise=1.0)
    samples = video_result["samples"]
    assert samples.shape == (FRAMES, 4, SIZE, SIZE)
    assert torch.isfinite(samples).all()
    assert not torch.allclose(samples, image_result["samples"], atol=1e-4)


def test_non_unet_model_is_refused_with_node_and_type():
    class NotAUNet(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.diffusion_model = torch.nn.Linear(2, 2)

    import comfy.model_patcher

    dit_like = comfy.model_patcher.ModelPatcher(NotAUNet(), torch.device("cpu"), torch.device("cpu"))
    with pytest.raises(TAVInputError, match=r"Inflate UNet: input 'model': NotAUNet \(diffusion model Linear\)"):
        inflated(dit_like)


def test_inflating_twice_is_refused(sd1):
    with pytest.raises(TAVInputError, match="already inflated"):
        inflated(inflated(sd1))


def test_batch_not_divisible_into_videos_is_refused(sd1):
    video_model = inflated(sd1)
    with pytest.raises(ValueError, match="cannot be split into 2 videos"):
        apply_unet(video_model, video(15, frames=3), SIGMA, context(0, 3), [1, 0])


def test_per_frame_attention_is_the_image_models_own(sd1):
    """No attn1 patch at all: with temporal layers off the inflated model predicts bitwise what the image model does."""
    video_model = inflated(sd1, attention=AttentionMode.PER_FRAME, temporal_layers=False)
    assert "attn1" not in video_model.model_options["transformer_options"].get("patches_replace", {})
    x = video(5)
    assert torch.equal(apply_unet(video_model, x, SIGMA, context(0, FRAMES), [0]),
                       apply_unet(sd1, x, SIGMA, context(0, FRAMES), [0]))
