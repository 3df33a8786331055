"""TAV Interpolate Frames: frame layout, keyframes kept and held on their inversion path, refusals, Cancel, a server."""

import dataclasses
import io as bytes_io
from types import SimpleNamespace

import comfy.model_management
import comfy.utils
import pytest
import torch
from comfyui_tune_a_video.comfy_glue.unet_inflation import INFLATION_ATTACHMENT, inflate_model, inflation_of
from comfyui_tune_a_video.nodes.control_condition import ControlCondition
from comfyui_tune_a_video.nodes.ddim_invert_video import DDIMInvertVideo
from comfyui_tune_a_video.nodes.interpolate_frames import InterpolateFrames
from comfyui_tune_a_video.nodes.tav_sample import TAVSample
from comfyui_tune_a_video.shapes_demo.world import random_clip
from comfyui_tune_a_video.tav_core.errors import TAVInputError
from comfyui_tune_a_video.tav_core.frame_interpolation import Mode, frame_layout, repaint_moves, slerp
from comfyui_tune_a_video.tav_core.inflation_config import InflationConfig
from tav_dev.comfy_server import make_server
from tav_dev.tiny_models import text_cond, tiny_controlnet, tiny_unet
from tav_dev.unet_harness import blend_with_gaussian_denoiser, progress_hook, randomize_temporal

NODE = "TAV Interpolate Frames"
KEYS, SIZE = 3, 8


def keyframes() -> dict:
    """A bright square stepping right over a textured background (raw VAE-latent scale)."""
    generator = torch.Generator().manual_seed(3)
    samples = 0.3 * torch.randn(1, 4, SIZE, SIZE, generator=generator).expand(KEYS, -1, -1, -1).clone()
    for k in range(KEYS):
        samples[k, :, 2:5, 1 + 2 * k: 4 + 2 * k] += 1.0
    return {"samples": samples}


@pytest.fixture(scope="module")
def model():
    """A tiny inflated SD1 UNet with live temporal layers that also denoises (DDIM round trips need that)."""
    model = inflate_model(tiny_unet("sd1", seed=0), InflationConfig(), "Inflate UNet")
    randomize_temporal(model, seed=4)
    mean = keyframes()["samples"].mean(0, keepdim=True)  # one frame: the wrapper repeats it to any frame count
    blend_with_gaussian_denoiser(model, mean, spread=0.5, unet_share=0.02)
    return model


def interpolate(
    model, latent, factor=1, mode="interpolate", steps=4, cfg=3.0, seed=0, resample=0, inverted=None, conds=None,
    strength=1.0,
):
    positive, negative = conds or (text_cond("sd1", 1), text_cond("sd1", 2))
    out = InterpolateFrames.execute(
        model, latent, positive, negative, factor, mode, steps, cfg, seed, resample, inverted_keyframes=inverted,
        inversion_strength=strength,
    )
    return out.result[0]


def invert(model, latent, steps, strength=1.0) -> dict:
    return DDIMInvertVideo.execute(model, latent, text_cond("sd1", 1), steps, strength).result[0]


def recording(model):
    """A clone whose every UNet evaluation (input, sigma) is appended to the returned list."""
    calls = []

    def wrapper(apply_model, args):
        calls.append((args["input"].detach().clone(), float(args["timestep"][0])))
        return apply_model(args["input"], args["timestep"], **args["c"])

    clone = model.clone()
    clone.set_model_unet_function_wrapper(wrapper)
    return clone, calls


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("mode", list(Mode))
@pytest.mark.parametrize("keys", [2, 3, 5])
def test_layout_puts_every_frame_once_in_order(keys, mode):
    for factor in range(1, 5):
        layout = frame_layout(keys, factor, mode)
        assert layout.frames == (keys - 1) * (factor + 1) + 1
        positions = sorted([*layout.key_positions, *(new.position for new in layout.new_frames)])
        assert positions == list(range(layout.frames))
        assert list(layout.key_positions) == sorted(layout.key_positions) and layout.key_positions[0] == 0
        for new in layout.new_frames:
            assert 0 < new.weight < 1
            if mode is Mode.INTERPOLATE:
                assert layout.key_positions[new.left] < new.position < layout.key_positions[new.right]
            else:
                assert new.right is None and new.position > layout.key_positions[-1] == keys - 1


def test_repaint_walk_jumps_back_resample_times_per_step():
    assert repaint_moves(3, 0) == [(0, 1), (1, 2), (2, 3)]
    moves = repaint_moves(3, 2)
    assert moves[:5] == [(0, 1), (1, 0), (0, 1), (1, 0), (0, 1)] and moves[-1] == (2, 3)
    assert sum(j > i for i, j in moves) == 3 * 3 and len(moves) == 3 * 5


def test_slerp_keeps_the_noise_norm_where_an_average_loses_it():
    generator = torch.Generator().manual_seed(0)
    a, b = torch.randn(2, 4, 32, 32, generator=generator)
    assert abs(float(slerp(a, b, 0.5).norm() / a.norm()) - 1) < 0.02
    assert abs(float(((a + b) / 2).norm() / a.norm()) - 0.5**0.5) < 0.02
    torch.testing.assert_close(slerp(a, a, 0.3), a)


@pytest.mark.parametrize("mode", ["interpolate", "extend"])
def test_output_has_every_frame_and_keyframes_come_out_as_they_went_in(model, mode):
    latent = keyframes()
    steps = 4
    # The inversion's own round trip on the keyframes alone (DDIM Invert Video -> TAV Sample, guidance 1).
    cond = text_cond("sd1", 1)
    round_trip = TAVSample.execute(model, cond, cond, invert(model, latent, steps), steps, 1.0, 0.0, 0).result[0]
    reconstruction_error = relative(round_trip["samples"], latent["samples"])
    for factor in range(1, 5):
        out = interpolate(model, latent, factor=factor, mode=mode, steps=steps)["samples"]
        layout = frame_layout(KEYS, factor, Mode(mode))
        assert out.shape == (layout.frames, 4, SIZE, SIZE) and torch.isfinite(out).all()
        kept = out[list(layout.key_positions)]
        assert relative(kept, latent["samples"]) <= reconstruction_error + 1e-4, (factor, reconstruction_error)
        torch.testing.assert_close(kept, latent["samples"], atol=1e-5, rtol=1e-5)  # in fact exact
        new = out[[frame.position for frame in layout.new_frames]]
        assert min(float((n - k).norm()) for n in new for k in latent["samples"]) > 1e-3  # generated, not copies


def test_keyframes_follow_their_exact_inversion_path_not_the_stock_straight_line(model):
    """At every step the model sees each keyframe at its DDIM-inversion latent for that sigma (DDIM Invert Video
    stopped there), through cond and uncond alike. The stock noise_mask with one fixed noise (the inverted end
    point's) would put them on x0 + sigma * eps_T instead: measured here."""
    latent, steps, factor = keyframes(), 5, 2  # ddim_uniform gives `steps` steps where steps divides 1000
    layout = frame_layout(KEYS, factor, Mode.INTERPOLATE)
    recorder, calls = recording(model)
    interpolate(recorder, latent, factor=factor, steps=steps, cfg=4.0)
    sampling = [(x, sigma) for x, sigma in calls if x.shape[0] % layout.frames == 0]
    assert len(sampling) == steps
    to_model = model.model.process_latent_in
    clean = to_model(latent["samples"])
    end = to_model(invert(model, latent, steps)["samples"])
    sigmas = [sigma for _, sigma in sampling]
    exact_errors, line_errors = [], []
    for i, (x, sigma) in enumerate(sampling):
        exact = to_model(invert(model, latent, steps, (steps - i) / steps)["samples"])
        line = clean + sigma / sigmas[0] * (end - clean)
        for chunk in x.split(layout.frames):  # uncond and cond
            exact_errors.append(relative(chunk[list(layout.key_positions)], exact))
        line_errors.append(relative(line - clean, exact - clean))
    assert max(exact_errors) < 1e-5, exact_errors
    print("straight-line hold, error of the noise part per step:", [round(e, 3) for e in line_errors])
    assert line_errors[0] < 1e-5 and max(line_errors[1:]) > 0.05, line_errors


def test_a_given_inversion_is_used_with_its_schedule(model):
    latent, steps = keyframes(), 4
    inverted = invert(model, latent, steps, strength=0.5)
    recorder, calls = recording(model)
    out = interpolate(recorder, latent, steps=steps, inverted=inverted, strength=0.5)["samples"]
    sampling = [x for x, _ in calls if x.shape[0] % 5 == 0]
    assert len(sampling) == 2 and not [x for x, _ in calls if x.shape[0] == KEYS]  # no second inversion
    first = sampling[0].split(5)[-1][[0, 2, 4]]
    torch.testing.assert_close(first, model.model.process_latent_in(inverted["samples"]), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out[[0, 2, 4]], latent["samples"], atol=1e-5, rtol=1e-5)


def test_a_lower_strength_starts_the_new_frames_from_the_noised_blend_of_their_neighbours(model):
    """inversion_strength 0.5 of 4 steps: 2 inversion and 2 sampling steps. At the first sampling step the
    keyframes sit at their inversion latent for that level, and each new frame at the blend of its neighbours'
    clean latents plus the slerp of their inverted noise, at the same level (SDEdit of the blend)."""
    latent, steps = keyframes(), 4
    recorder, calls = recording(model)
    out = interpolate(recorder, latent, steps=steps, strength=0.5)["samples"]
    sampling = [(x, sigma) for x, sigma in calls if x.shape[0] % 5 == 0]
    assert len([x for x, _ in calls if x.shape[0] == KEYS]) == 2 and len(sampling) == 2
    first, sigma = sampling[0][0].split(5)[-1], sampling[0][1]
    to_model = model.model.process_latent_in
    clean = to_model(latent["samples"])
    held = to_model(invert(model, latent, steps, strength=0.5)["samples"])
    torch.testing.assert_close(first[[0, 2, 4]], held, atol=1e-5, rtol=1e-5)
    noise = (held - clean) / sigma
    for k, position in enumerate((1, 3)):
        start = torch.lerp(clean[k], clean[k + 1], 0.5) + sigma * slerp(noise[k], noise[k + 1], 0.5)
        torch.testing.assert_close(first[position], start, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out[[0, 2, 4]], latent["samples"], atol=1e-5, rtol=1e-5)
    assert relative(out[[1, 3]], torch.lerp(latent["samples"][:2], latent["samples"][1:], 0.5)) > 1e-3


def test_seed_matters_only_where_fresh_noise_is_drawn(model):
    latent = keyframes()
    same = [interpolate(model, latent, seed=seed)["samples"] for seed in (1, 2)]
    assert torch.equal(*same)
    for options in ({"resample": 1}, {"mode": "extend"}):
        runs = [interpolate(model, latent, seed=seed, **options)["samples"] for seed in (1, 1, 2)]
        assert torch.equal(runs[0], runs[1]) and not torch.allclose(runs[0], runs[2]), options


def test_hints_are_per_output_frame(model):
    """ControlNet hints steer the whole output clip (5 frames here); the 3 keyframes are inverted by text alone."""
    hints = torch.rand(5, 8 * SIZE, 8 * SIZE, 3, generator=torch.Generator().manual_seed(1))
    settings = ("none", 1.0, 0.0, 1.0, 100, 200, 3, 64)
    for frames, refused in ((5, False), (3, True)):
        positive, negative, _ = ControlCondition.execute(
            text_cond("sd1", 1), text_cond("sd1", 2), tiny_controlnet(), hints[:frames], *settings
        ).result
        if refused:
            with pytest.raises(TAVInputError, match=f"{NODE}: input 'positive': 3 hint frames for a video of 5"):
                interpolate(model, keyframes(), conds=(positive, negative))
        else:
            assert interpolate(model, keyframes(), conds=(positive, negative))["samples"].shape == (5, 4, SIZE, SIZE)


def limited_to(model, frames: int):
    """A clone whose inflation records a motion module with a `frames`-row position table."""
    clone = model.clone()
    motion = SimpleNamespace(name="mm_test.safetensors", spec=SimpleNamespace(frame_limit=frames))
    clone.set_attachments(INFLATION_ATTACHMENT, dataclasses.replace(inflation_of(model), motion=motion))
    return clone


def test_bad_inputs_are_refused_with_node_and_input_before_any_work(model):
    for factor in (0, 5):
        message = InterpolateFrames.validate_inputs(factor=factor)
        assert isinstance(message, str) and message.startswith(f"{NODE}: input 'factor'")
        with pytest.raises(TAVInputError, match=f"{NODE}: input 'factor': {factor} is outside 1 .. 4"):
            interpolate(model, keyframes(), factor=factor)
    assert InterpolateFrames.validate_inputs(factor=4, steps=10, cfg=7.5, seed=1, resample=3) is True
    message = InterpolateFrames.validate_inputs(inversion_strength=1.5)
    assert isinstance(message, str) and message.startswith(f"{NODE}: input 'inversion_strength'")
    recorder, calls = recording(model)
    one = {"samples": keyframes()["samples"][:1]}
    cases = [
        (recorder, one, {}, "input 'keyframes': 1 frame"),
        (tiny_unet("sd1"), keyframes(), {}, "input 'model': this MODEL is not inflated"),
        (recorder, invert(model, keyframes(), 4), {}, "input 'keyframes': this LATENT is a DDIM inversion"),
        (limited_to(recorder, 6), keyframes(), {"factor": 3}, "input 'factor': mm_test.safetensors has a position "
         "table of 6 frames; this video has 9 frames"),
        (recorder, keyframes(), {"inverted": keyframes()}, "input 'inverted_keyframes': this LATENT is no DDIM"),
        (recorder, keyframes(), {"inverted": invert(model, {"samples": keyframes()["samples"][:2]}, 4)},
         "input 'inverted_keyframes': its inversion record has 2 frames, but keyframes has 3"),
        (recorder, keyframes(), {"inverted": invert(model, keyframes(), 4), "steps": 5},
         "input 'steps': 5, but the latent was inverted with 4 steps"),
        (recorder, keyframes(), {"inverted": invert(model, keyframes(), 4, strength=0.5)},
         "input 'inversion_strength': it starts sampling at step 0, but inverted_keyframes was inverted to start "
         "at step 2"),
        (recorder, keyframes(), {"strength": 0.0}, r"input 'inversion_strength': 0.0 is outside 0.01 .. 1.0"),
    ]
    calls.clear()
    for patcher, latent, options, message in cases:
        with pytest.raises(TAVInputError, match=f"{NODE}: {message}"):
            interpolate(patcher, latent, **{"steps": 4, **options})
    assert not calls  # every refusal came before the model ran
    interpolate(limited_to(model, 7), keyframes(), factor=2)  # 7 frames fit a 7-row table


@pytest.mark.parametrize("cancel_at", [None, 3, 9])
def test_progress_and_cancel(model, cancel_at):
    """5 inversion evaluations, then 5 steps x (1 + 2 jump-backs) of sampling: Cancel at the 3rd evaluation
    (inverting) or the 9th (sampling) stops right there."""
    seen, calls = [], []

    def press_cancel(apply_model, args):  # deterministic, whatever the progress bar's throttling
        calls.append(1)
        if len(calls) == cancel_at:
            comfy.model_management.interrupt_current_processing(True)
        return apply_model(args["input"], args["timestep"], **args["c"])

    def hook(value, total, preview, node_id=None):  # as ComfyUI's server hook: raises once Cancel is pressed
        seen.append((value, total))
        comfy.model_management.throw_exception_if_processing_interrupted()

    patched = model.clone()
    patched.set_model_unet_function_wrapper(press_cancel)
    with progress_hook(hook):
        if cancel_at is None:
            interpolate(patched, keyframes(), steps=5, resample=2)
            assert len(calls) == 5 + 15 and seen[-1] == (5, 5) and (5, 5) in seen[:5]
        else:
            with pytest.raises(comfy.model_management.InterruptProcessingException):
                interpolate(patched, keyframes(), steps=5, resample=2)
            assert len(calls) == cancel_at  # nothing ran past the evaluation at which Cancel was pressed


def test_interpolation_runs_on_a_real_server(tmp_path):
    """Demo model -> Inflate UNet -> TAV Interpolate Frames on three keyframes of a shapes-world clip, from an API
    prompt written before inversion_strength existed (optional, so such prompts still run at its default)."""
    from PIL import Image

    clip = random_clip(5, frames=3, path="linear")
    frames = [Image.fromarray(frame) for frame in clip.frames]
    buffer = bytes_io.BytesIO()
    frames[0].save(buffer, format="PNG", save_all=True, append_images=frames[1:])
    server = make_server(tmp_path)
    (server.input_dir).mkdir(parents=True, exist_ok=True)
    (server.input_dir / "keyframes.png").write_bytes(buffer.getvalue())
    prompt = {
        "1": {"class_type": "TAV_LoadDemoModel", "inputs": {}},
        "2": {"class_type": "LoadImage", "inputs": {"image": "keyframes.png"}},
        "3": {"class_type": "VAEEncode", "inputs": {"pixels": ["2", 0], "vae": ["1", 2]}},
        "4": {"class_type": "TAV_InflateUNet", "inputs": {
            "model": ["1", 0], "attention": "sparse_causal", "temporal_layers": True,
            "temporal_position_encoding": "none", "groupnorm": "per_video"}},
        "5": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": clip.caption}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": ""}},
        "7": {"class_type": "TAV_InterpolateFrames", "inputs": {
            "model": ["4", 0], "keyframes": ["3", 0], "positive": ["5", 0], "negative": ["6", 0], "factor": 1,
            "mode": "interpolate", "steps": 3, "cfg": 3.0, "seed": 0, "resample": 0}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["7", 0], "vae": ["1", 2]}},
        "9": {"class_type": "PreviewImage", "inputs": {"images": ["8", 0]}},
    }
    with server:
        info = server.get("/object_info")["TAV_InterpolateFrames"]
        inputs = {**info["input"]["required"], **info["input"].get("optional", {})}
        assert {"inverted_keyframes", "inversion_strength"} <= set(info["input"].get("optional", {}))
        assert all(len(spec) > 1 and spec[1].get("tooltip") for spec in inputs.values()), inputs
        entry = server.run_prompt(prompt)
    assert entry["status"]["status_str"] == "success", entry["status"]
    assert len(entry["outputs"]["9"]["images"]) == 5
