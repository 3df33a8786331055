"""Long clips in frame windows: DDIM Invert Video and TAV Sample run the UNet on overlapping windows, blend the
overlaps and anchor every window on the clip's frame 0."""

import pytest
import torch
from comfyui_tune_a_video.comfy_glue.unet_inflation import inflate_model
from comfyui_tune_a_video.nodes.control_condition import ControlCondition
from comfyui_tune_a_video.nodes.ddim_invert_video import DDIMInvertVideo
from comfyui_tune_a_video.nodes.tav_sample import TAVSample
from comfyui_tune_a_video.tav_core.anchor_frames import AnchorFrames
from comfyui_tune_a_video.tav_core.errors import TAVInputError
from comfyui_tune_a_video.tav_core.frame_windows import WindowBlend, blend_weights, frame_windows
from comfyui_tune_a_video.tav_core.inflation_config import AttentionMode, InflationConfig
from tav_dev.tiny_models import text_cond, tiny_controlnet, tiny_t2i_adapter, tiny_unet
from tav_dev.unet_harness import randomize_temporal

FRAMES = 8


def assert_same_clip(actual: torch.Tensor, expected: torch.Tensor) -> None:
    """Equal up to float summation order (the UNet's batches differ in size)."""
    torch.testing.assert_close(actual, expected, atol=1e-5 * float(expected.abs().max()), rtol=1e-5)


def latent(seed: int = 0) -> dict:
    return {"samples": torch.randn(FRAMES, 4, 8, 8, generator=torch.Generator().manual_seed(seed))}


def sample(model, latent_in, kind="sd1", window=0, overlap=0, cfg=3.0, positive=None):
    positive = text_cond(kind, 1) if positive is None else positive
    return TAVSample.execute(model, positive, text_cond(kind, 2), latent_in, 3, cfg, 0.0, 5, window,
                             overlap).result[0]["samples"]


def first_frame_model(kind: str):
    """First-frame attention and no temporal layers: frame i's output depends on frames i and 0 alone, so windows
    anchored on frame 0 must give the whole clip's result."""
    return inflate_model(tiny_unet(kind, seed=0), InflationConfig(attention=AttentionMode.FIRST_FRAME,
                                                                  temporal_layers=False), "Inflate UNet")


@pytest.mark.parametrize(("frames", "window", "overlap"), [(8, 3, 1), (48, 16, 4), (48, 8, 4), (10, 4, 3), (9, 9, 2)])
def test_windows_cover_the_clip_from_frame_0_to_its_end(frames, window, overlap):
    windows = frame_windows(frames, window, overlap)
    assert windows[0].start == 0 and windows[-1].stop == frames
    assert all(w.stop - w.start == min(window, frames) for w in windows)
    for before, after in zip(windows, windows[1:], strict=False):
        assert after.start - before.start <= window - overlap and before.stop - after.start >= overlap


def test_blending_keeps_a_signal_every_window_agrees_on():
    """Windows that all hold the true value of each frame blend back to exactly it, weights never vanishing."""
    frames, window, overlap = 11, 4, 2
    truth = torch.randn(2, frames, 3)
    blend = WindowBlend(frames, overlap)
    for w in frame_windows(frames, window, overlap):
        assert bool((blend_weights(w, frames, overlap) > 0).all())
        blend.add(w, truth[:, w.start:w.stop])
    torch.testing.assert_close(blend.result(torch.float32), truth, atol=1e-6, rtol=1e-6)


def test_overlaps_cross_fade():
    """A frame shared by two windows takes more of the window it lies deeper in."""
    frames, overlap = 6, 2
    first, second = frame_windows(frames, 4, overlap)
    blend = WindowBlend(frames, overlap)
    blend.add(first, torch.zeros(1, 4))
    blend.add(second, torch.ones(1, 4))
    shared = blend.result(torch.float32)[0, 2:4]
    assert 0 < shared[0] < 0.5 < shared[1] < 1


def test_a_window_as_long_as_the_clip_is_the_whole_clip_exactly():
    model = inflate_model(tiny_unet("sd1", seed=0), InflationConfig(), "Inflate UNet")
    randomize_temporal(model, seed=4)
    whole = sample(model, latent())
    torch.testing.assert_close(sample(model, latent(), window=FRAMES, overlap=3), whole, atol=0, rtol=0)
    inverted = DDIMInvertVideo.execute(model, latent(), text_cond("sd1", 2), 3, 1.0).result[0]
    same = DDIMInvertVideo.execute(model, latent(), text_cond("sd1", 2), 3, 1.0, FRAMES, 2).result[0]
    torch.testing.assert_close(same["samples"], inverted["samples"], atol=0, rtol=0)


@pytest.mark.parametrize("kind", ["sd1", "sdxl"])
def test_windows_anchored_on_frame_0_reproduce_the_whole_clip(kind, monkeypatch):
    """With cond and uncond in one batch (and SDXL's pooled vector cut per window): every later window reads the
    clip's frame 0 in every layer; reading its own first frame would change frames 3..7."""
    model = first_frame_model(kind)
    whole = sample(model, latent(), kind)
    reads = []
    original = AnchorFrames.first_frames

    def counted(self, layer, k, v, videos):
        reads.append(self.recording)
        return original(self, layer, k, v, videos)

    monkeypatch.setattr(AnchorFrames, "first_frames", counted)
    windowed = sample(model, latent(), kind, window=3, overlap=1)
    assert_same_clip(windowed, whole)
    windows = len(frame_windows(FRAMES, 3, 1))
    blocks = len(model.get_attachment("tav_inflation").sites.transformer_blocks)
    assert reads.count(False) == (windows - 1) * reads.count(True) and reads.count(True) % blocks == 0


def test_without_the_anchor_later_windows_drift():
    """The check above can fail: windows that read their own first frame give other frames 3..7."""
    model = first_frame_model("sd1")
    whole = sample(model, latent())
    own_first = AnchorFrames.first_frames

    def unanchored(self, layer, k, v, videos):
        self.recording = True
        return own_first(self, layer, k, v, videos)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(AnchorFrames, "first_frames", unanchored)
        drifting = sample(model, latent(), window=3, overlap=1)
    assert not torch.allclose(drifting[3:], whole[3:], atol=1e-3 * float(whole.abs().max()))
    assert_same_clip(drifting[:2], whole[:2])


@pytest.mark.parametrize(("window", "overlap"), [(3, 1), (4, 0), (5, 3)])
def test_sparse_causal_windows_carry_the_frame_before_and_reproduce_the_whole_clip(window, overlap):
    """Sparse-causal attention without temporal layers: frame i reads frames 0 and i-1 alone, so windows that read
    the clip's frame 0 and, for their first frame, the previous window's frame before it give the whole clip's
    result, in sampling and in inversion."""
    model = inflate_model(tiny_unet("sd1", seed=0), InflationConfig(temporal_layers=False), "Inflate UNet")
    assert_same_clip(sample(model, latent(), window=window, overlap=overlap), sample(model, latent()))
    inverted = DDIMInvertVideo.execute(model, latent(), text_cond("sd1", 2), 3, 1.0).result[0]["samples"]
    windowed = DDIMInvertVideo.execute(model, latent(), text_cond("sd1", 2), 3, 1.0, window, overlap).result[0]
    assert_same_clip(windowed["samples"], inverted)


def test_without_the_frame_before_a_later_windows_first_frame_changes():
    """The check above can fail: a window whose first frame reads itself as its previous changes from there on."""
    model = inflate_model(tiny_unet("sd1", seed=0), InflationConfig(temporal_layers=False), "Inflate UNet")
    whole = sample(model, latent())
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(AnchorFrames, "previous_frames", lambda self, layer, k, v, videos: None)
        uncarried = sample(model, latent(), window=4, overlap=0)  # windows [0, 4) and [4, 8)
    assert_same_clip(uncarried[:4], whole[:4])
    assert not torch.allclose(uncarried[4:], whole[4:], atol=1e-3 * float(whole.abs().max()))


def test_what_windows_hand_on_holds_one_frame_not_the_window():
    """Frame 0's and the carried frame's keys and values live from window to window (and through a tune step):
    each must hold its own frame, not the whole window's keys and values it was cut from."""
    videos, frames, tokens, channels = 2, 4, 16, 8
    k, v = (torch.randn(videos * frames, tokens, channels) for _ in range(2))
    anchors = AnchorFrames(carry_at=2)
    k0, v0 = anchors.first_frames("layer", k, v, videos)
    anchors.previous_frames("layer", k, v, videos)
    anchors.next_window(carry_at=None)
    k_before, v_before = anchors.previous_frames("layer", k, v, videos)
    assert torch.equal(k0, k.view(videos, frames, tokens, channels)[:, 0])
    assert torch.equal(v_before, v.view(videos, frames, tokens, channels)[:, 2])
    one_frame = videos * tokens * channels * k.element_size()
    assert [t.untyped_storage().nbytes() for t in (k0, v0, k_before, v_before)] == [one_frame] * 4


def test_the_unet_never_sees_more_than_a_window():
    model = inflate_model(tiny_unet("sd1", seed=0), InflationConfig(), "Inflate UNet")
    batches = []
    handle = model.model.diffusion_model.input_blocks[0][0].register_forward_pre_hook(
        lambda module, args: batches.append(args[0].shape[0]))
    try:
        sample(model, latent(), window=4, overlap=2)
        DDIMInvertVideo.execute(model, latent(), text_cond("sd1", 2), 3, 1.0, 4, 2)
    finally:
        handle.remove()
    assert batches and max(batches) <= 2 * 4 and set(batches) <= {4, 8}


@pytest.mark.parametrize("kind", ["controlnet", "t2i_adapter"])
def test_control_hints_follow_their_frames_into_the_windows_and_it_runs_a_window_at_a_time(kind):
    model = first_frame_model("sd1")
    control = tiny_controlnet() if kind == "controlnet" else tiny_t2i_adapter()
    network = control.control_model if kind == "controlnet" else control.t2i_model
    hints = torch.rand(FRAMES, 64, 64, 3, generator=torch.Generator().manual_seed(1))
    positive, negative, _ = ControlCondition.execute(
        text_cond("sd1", 1), text_cond("sd1", 2), control, hints, "none", 1.0, 0.0, 1.0, 100, 200, 3, 64
    ).result
    control_batches = []
    handle = network.register_forward_pre_hook(
        lambda module, args, kwargs: control_batches.append(next(iter([*args, *kwargs.values()])).shape[0]),
        with_kwargs=True)
    try:
        run = []
        for window in (0, 3):
            control_batches.clear()
            run.append(TAVSample.execute(model, positive, negative, latent(), 3, 3.0, 0.0, 5, window, 1).result[0])
    finally:
        handle.remove()
    assert set(control_batches) == {2 * 3, 2 * 2}, "the ControlNet ran on more than a window (here 3+3+2 frames)"
    plain = sample(model, latent(), window=3, overlap=1)
    assert not torch.allclose(run[1]["samples"], plain, atol=1e-3)  # the hints do reach the windows
    assert_same_clip(run[1]["samples"], run[0]["samples"])


def test_windowed_inversion_walks_back_to_the_source():
    """Invert and sample in the same windows: the round trip of the first-frame model returns the source."""
    model = first_frame_model("sd1")
    inverted = DDIMInvertVideo.execute(model, latent(), text_cond("sd1", 1), 3, 1.0, 3, 1).result[0]
    whole = DDIMInvertVideo.execute(model, latent(), text_cond("sd1", 1), 3, 1.0).result[0]
    assert_same_clip(inverted["samples"], whole["samples"])


@pytest.mark.parametrize(("window", "overlap", "named"), [(1, 0, "window"), (4, 4, "overlap"), (3, 5, "overlap")])
def test_bad_windows_are_refused_before_any_work(window, overlap, named):
    message = TAVSample.validate_inputs(steps=3, cfg=3.0, eta=0.0, window=window, overlap=overlap)
    assert isinstance(message, str) and "TAV Sample" in message and named in message
    assert isinstance(DDIMInvertVideo.validate_inputs(steps=3, inversion_strength=1.0, window=window,
                                                      overlap=overlap), str)


def test_a_window_longer_than_the_clip_is_named():
    model = first_frame_model("sd1")
    with pytest.raises(TAVInputError, match=r"TAV Sample.*window.*9 frames, but the clip has 8"):
        sample(model, latent(), window=9, overlap=2)
    with pytest.raises(TAVInputError, match=r"DDIM Invert Video.*window"):
        DDIMInvertVideo.execute(model, latent(), text_cond("sd1", 1), 3, 1.0, 9, 2)
