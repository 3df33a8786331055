"""ControlNet/T2I-Adapter Condition with tiny real ComfyUI ControlNet and T2I-Adapter models."""

from types import SimpleNamespace

import comfy.context_windows
import comfy_extras.nodes_context_windows as context_windows
import cv2
import numpy as np
import pytest
import torch
from comfyui_tune_a_video.comfy_glue.unet_inflation import inflate_model
from comfyui_tune_a_video.comfy_glue.video_control import make_video_control
from comfyui_tune_a_video.nodes.control_condition import ControlCondition
from comfyui_tune_a_video.nodes.ddim_invert_video import DDIMInvertVideo
from comfyui_tune_a_video.nodes.tav_sample import TAVSample
from comfyui_tune_a_video.tav_core.errors import TAVInputError
from comfyui_tune_a_video.tav_core.hint_preprocessors import HintSettings, Preprocessor, compute_hints
from comfyui_tune_a_video.tav_core.inflation_config import AttentionMode, GroupNormMode, InflationConfig
from tav_dev.tiny_models import text_cond, tiny_controlnet, tiny_t2i_adapter, tiny_unet
from tav_dev.unet_harness import denoise_via_sampler, randomize_temporal

FRAMES, PIXELS = 4, 64
CONTROLS = {"controlnet": tiny_controlnet, "t2i_adapter": tiny_t2i_adapter}


def frames(seed: int = 0) -> torch.Tensor:
    """Frames with structure: a bright disc moving right over a noisy gradient."""
    generator = np.random.default_rng(seed)
    out = np.zeros((FRAMES, PIXELS, PIXELS, 3), dtype=np.float32)
    ramp = np.linspace(0.1, 0.5, PIXELS, dtype=np.float32)[None, :, None]
    for f in range(FRAMES):
        image = np.repeat(ramp, PIXELS, axis=0).repeat(3, axis=2)
        image = image + 0.05 * generator.standard_normal((PIXELS, PIXELS, 3))
        cv2.circle(image, (16 + 8 * f, 32), 12, (0.9, 0.8, 0.2), -1)
        out[f] = np.clip(image, 0, 1)
    return torch.from_numpy(out)


def condition(control, hint_frames, preprocessor="none", positive=None, negative=None):
    positive = text_cond("sd1", 1) if positive is None else positive
    negative = text_cond("sd1", 2) if negative is None else negative
    return ControlCondition.execute(
        positive, negative, control, hint_frames, preprocessor, 1.0, 0.0, 1.0, 100, 200, 3, 64
    ).result


def isolated_model():
    settings = InflationConfig(attention=AttentionMode.FIRST_FRAME, temporal_layers=False,
                               groupnorm=GroupNormMode.PER_FRAME)
    return inflate_model(tiny_unet("sd1", seed=0), settings, "Inflate UNet")


@pytest.mark.parametrize("kind", CONTROLS)
def test_hint_k_steers_frame_k_only(kind):
    model, control, latent = isolated_model(), CONTROLS[kind](), torch.randn(FRAMES, 4, 8, 8)
    hints = torch.rand(FRAMES, PIXELS, PIXELS, 3, generator=torch.Generator().manual_seed(1))
    changed = hints.clone()
    changed[2] = 1.0 - changed[2]
    outputs = []
    for hint_frames in (hints, changed):
        positive, negative, _ = condition(control, hint_frames)
        outputs.append(denoise_via_sampler(model, latent, 2.0, positive, negative, cfg=1.0))
    before, after = outputs
    assert not torch.allclose(before[2], after[2], atol=1e-4)
    for j in (1, 3):  # neither frame 0 nor the changed frame
        torch.testing.assert_close(before[j], after[j], atol=1e-5, rtol=1e-5)


def set_step_for_batched_frames(self, timestep, model_options):
    """ComfyUI 0.3.75's IndexListContextHandler.set_step compares all sample sigmas with a per-frame timestep
    batch, which fails whenever the windows run over the batch (dim 0); all frames share one sigma."""
    sigmas = model_options["transformer_options"]["sample_sigmas"]
    self._step = int(torch.nonzero(torch.isclose(sigmas, timestep[:1], rtol=0.0001))[0].item())


def with_context_windows(model, **settings):
    """The stock Context Windows (Manual) node; inputs it has beyond `settings` keep their defaults."""
    node = context_windows.ContextWindowsManualNode
    schema = node.define_schema()
    inputs = {spec.id: settings.get(spec.id, spec.default) for spec in schema.inputs if spec.id != "model"}
    return node.execute(model, **inputs).result[0]


@pytest.mark.parametrize("kind", CONTROLS)
def test_hints_follow_frames_inside_context_windows(kind, monkeypatch):
    """Windows [0, 1] and [2, 3]: each window must get its own frames' hints (ComfyUI alone gives hints 0, 1)."""
    monkeypatch.setattr(comfy.context_windows.IndexListContextHandler, "set_step", set_step_for_batched_frames)
    model = isolated_model()
    model = with_context_windows(model, context_length=2, context_overlap=0, context_schedule="standard_static",
                                 fuse_method="flat", dim=0)
    control, latent = CONTROLS[kind](), torch.randn(FRAMES, 4, 8, 8)
    hints = torch.rand(FRAMES, PIXELS, PIXELS, 3, generator=torch.Generator().manual_seed(2))

    def run(hint_frames):
        positive, negative, _ = condition(control, hint_frames)
        return denoise_via_sampler(model, latent, 2.0, positive, negative, cfg=1.0)

    reference = run(hints)
    # Frame 3 is nobody's first frame in any window; newer ComfyUI also shows window [2, 3] frame 1 as an
    # anchor (its first frame), so a change of hint 1 may reach frames 2 and 3 there, but never frame 0.
    for k, unchanged in ((3, (0, 1, 2)), (1, (0,))):
        changed = hints.clone()
        changed[k] = 1.0 - changed[k]
        out = run(changed)
        assert not torch.allclose(out[k], reference[k], atol=1e-4), k
        for j in unchanged:
            torch.testing.assert_close(out[j], reference[j], atol=1e-5, rtol=1e-5)


def test_selection_per_chunk_and_window():
    control = make_video_control(tiny_controlnet(), torch.arange(4.0).view(4, 1, 1, 1).expand(4, 3, 8, 8), "test")
    window = SimpleNamespace(index_list=[2, 3])
    control.tav_select_hints(batch=4, chunks=2, transformer_options={"context_window": window})
    assert control.cond_hint_original[:, 0, 0, 0].tolist() == [2.0, 3.0, 2.0, 3.0]
    control.tav_select_hints(batch=8, chunks=2, transformer_options={})
    assert control.cond_hint_original[:, 0, 0, 0].tolist() == [0.0, 1.0, 2.0, 3.0] * 2
    anchored = SimpleNamespace(index_list=[2, 3], causal_anchor_index=1)  # newer ComfyUI's causal_window_fix
    control.tav_select_hints(batch=6, chunks=2, transformer_options={"context_window": anchored})
    assert control.cond_hint_original[:, 0, 0, 0].tolist() == [1.0, 2.0, 3.0] * 2


@pytest.mark.parametrize("kind", CONTROLS)
def test_joint_and_split_cond_uncond_agree_through_tav_sample(kind, monkeypatch):
    model = inflate_model(tiny_unet("sd1", seed=0), InflationConfig(), "Inflate UNet")
    randomize_temporal(model, seed=3)
    positive, negative, _ = condition(CONTROLS[kind](), frames(), "canny")
    latent = {"samples": torch.randn(FRAMES, 4, 8, 8, generator=torch.Generator().manual_seed(4))}
    inverted = DDIMInvertVideo.execute(model, latent, text_cond("sd1", 2), 4, 1.0).result[0]
    joint = TAVSample.execute(model, positive, negative, inverted, 4, 7.5, 0.0, 0).result[0]["samples"]
    monkeypatch.setattr(model.model, "memory_required", lambda *args, **kwargs: float("inf"))
    split = TAVSample.execute(model, positive, negative, inverted, 4, 7.5, 0.0, 0).result[0]["samples"]
    plain = TAVSample.execute(model, text_cond("sd1", 1), negative, inverted, 4, 7.5, 0.0, 0).result[0]["samples"]
    assert not torch.allclose(joint, plain, atol=1e-3)  # the control is applied
    torch.testing.assert_close(joint, split, atol=2e-3 * float(joint.abs().max()), rtol=1e-4)


def test_canny_equals_opencv():
    source = frames(5)
    hints = compute_hints(source.numpy(), Preprocessor.CANNY, HintSettings(low_threshold=50, high_threshold=120))
    for f in range(FRAMES):
        image = (source[f].numpy() * 255).round().astype(np.uint8)
        expected = cv2.Canny(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), 50, 120)
        assert np.array_equal((hints[f, :, :, 0] * 255).round().astype(np.uint8), expected)
        assert expected.any()


@pytest.mark.parametrize("preprocessor", list(Preprocessor))
def test_every_preprocessor_gives_rgb_hints_in_range(preprocessor):
    source = frames(6)
    _, _, hints = condition(tiny_controlnet(), source, preprocessor.value)
    assert hints.shape == source.shape and hints.dtype == torch.float32
    assert float(hints.min()) >= 0.0 and float(hints.max()) <= 1.0
    assert float(hints.max()) > float(hints.min())  # not blank
    if preprocessor in (Preprocessor.CANNY, Preprocessor.SOFT_EDGE, Preprocessor.SCRIBBLE, Preprocessor.LINEART):
        assert torch.equal(hints[..., 0], hints[..., 1]) and torch.equal(hints[..., 1], hints[..., 2])
    if preprocessor == Preprocessor.COLOR:  # 64-pixel palette cells: one colour per cell
        assert torch.equal(hints[:, :, :, :], hints[:, :1, :1, :].expand_as(hints))


def test_hint_count_mismatch_is_named():
    model = inflate_model(tiny_unet("sd1", seed=0), InflationConfig(), "Inflate UNet")
    positive, negative, _ = condition(tiny_controlnet(), frames()[:3])
    latent = {"samples": torch.randn(FRAMES, 4, 8, 8)}
    with pytest.raises(TAVInputError, match="TAV Sample: input 'positive': 3 hint frames for a video of 4 frames"):
        TAVSample.execute(model, positive, negative, latent, 4, 5.0, 0.0, 0)
    with pytest.raises(TAVInputError, match="DDIM Invert Video: input 'conditioning': 3 hint frames for a video of 4"):
        DDIMInvertVideo.execute(model, latent, positive, 4, 1.0)
    single, single_negative, _ = condition(tiny_controlnet(), frames()[:1])  # one hint for all frames is fine
    out = TAVSample.execute(model, single, single_negative, latent, 4, 5.0, 0.0, 0).result[0]
    assert out["samples"].shape == (FRAMES, 4, 8, 8)


def test_chains_with_another_control():
    first_positive, first_negative, _ = condition(tiny_controlnet(seed=1), frames(), "canny")
    positive, negative, _ = condition(tiny_t2i_adapter(), frames(), "color", first_positive, first_negative)
    control = positive[0][1]["control"]
    assert type(control).__name__ == "VideoT2IAdapter"
    assert type(control.previous_controlnet).__name__ == "VideoControlNet"
    assert negative[0][1]["control"] is control
