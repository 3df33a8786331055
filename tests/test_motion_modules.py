"""AnimateDiff motion modules in the pack: read from the files users hold, placed where AnimateDiff puts them,
computing what AnimateDiff's UNet3DConditionModel computes, and refused clearly when they cannot run."""

import pickle

import pytest
import torch
from comfyui_tune_a_video.comfy_glue.motion_injection import MotionAfter, motion_patcher_of
from comfyui_tune_a_video.comfy_glue.unet_inflation import inflation_of
from comfyui_tune_a_video.nodes.inflate_unet import InflateUNet
from comfyui_tune_a_video.nodes.load_motion_module import LoadMotionModule
from comfyui_tune_a_video.tav_core.errors import TAVInputError
from comfyui_tune_a_video.tav_core.motion_module_file import MotionVersion
from comfyui_tune_a_video.tav_core.weights_file import save_atomically
from tav_dev.animatediff_reference import reference_denoised
from tav_dev.motion_module_files import MOTION_VERSIONS, merge_motion_lora, seeded_motion_lora, seeded_motion_module
from tav_dev.tiny_models import full_unet, tiny_unet

SIGMA, SIZE = 2.0, 8
SD1_VERSIONS = ("v1", "v2", "v3", "animatelcm")
SDXL_VERSIONS = ("sdxl", "hotshotxl")
TABLES = {"v1": 24, "v2": 32, "v3": 32, "animatelcm": 64, "sdxl": 32, "hotshotxl": 24}


def base_for(version: str, sd15_mini, sdxl):
    return sdxl if version in SDXL_VERSIONS else sd15_mini


def save(folder, name: str, tensors: dict) -> str:
    save_atomically(folder / name, tensors, {})
    return name


def load(name: str, lora: str = "none", strength: float = 1.0):
    return LoadMotionModule.execute(name, lora, strength).result[0]


def inflate(base, motion, attention="per_frame", temporal_layers=False, groupnorm="per_frame"):
    return InflateUNet.execute(base, attention, temporal_layers, "none", groupnorm, motion_module=motion).result[0]


def inputs(base, frames: int, videos: int, seed: int, dtype=torch.float32):
    generator = torch.Generator().manual_seed(seed)
    unet = base.model.diffusion_model
    width = next(b for b in unet.modules() if hasattr(b, "attn2") and b.attn2 is not None).attn2.to_k.in_features
    batch = frames * videos
    x = torch.randn(batch, 4, SIZE, SIZE, generator=generator, dtype=dtype)
    context = torch.randn(videos, 5, width, generator=generator, dtype=dtype).repeat_interleave(frames, 0)
    conds = {}
    if unet.num_classes is not None:
        adm = base.model.model_config.unet_config["adm_in_channels"]
        conds["y"] = torch.randn(videos, adm, generator=generator, dtype=dtype).repeat_interleave(frames, 0)
    return x, context, conds


def predict(model, x, context, videos: int, **conds):
    from tav_dev.unet_harness import apply_unet

    return apply_unet(model, x, SIGMA, context, [0] * videos, **conds)


@pytest.mark.parametrize("version", MOTION_VERSIONS)
def test_the_version_is_read_from_the_keys(motion_folders, sd15_mini, sdxl, version):
    base = base_for(version, sd15_mini, sdxl)
    state = seeded_motion_module(base.model.diffusion_model, version, seed=1)
    motion = load(save(motion_folders.modules, f"mm_{version}.safetensors", state))
    assert motion.spec.version == MotionVersion(version)
    assert motion.spec.frame_limit == TABLES[version]
    assert (motion.spec.layout.mid is not None) == (version in ("v2", "animatelcm"))
    assert version in motion.describe()


@pytest.mark.parametrize(("version", "modules"), [
    ("v1", 20), ("v2", 21), ("v3", 20), ("animatelcm", 21), ("sdxl", 9), ("hotshotxl", 9),
])
def test_one_module_follows_each_layer_animatediff_names(motion_folders, sd15_mini, sdxl, version, modules):
    """8 + 12 on an SD1.5-shaped UNet (plus the middle block for v2); the tiny SDXL-shaped UNet has one ResNet
    per level: 3 down + 6 up."""
    base = base_for(version, sd15_mini, sdxl)
    motion = load(save(motion_folders.modules, "mm.safetensors", seeded_motion_module(
        base.model.diffusion_model, version, seed=1)))
    inflated = inflate(base, motion)
    patches = {key: patch for key, patch in inflated.object_patches.items() if isinstance(patch, MotionAfter)}
    assert len(patches) == modules == len(inflation_of(inflated).motion.sites)
    assert len({id(patch.module) for patch in patches.values()}) == modules  # each module runs once
    assert motion_patcher_of(inflated) is motion.patcher
    first = inflation_of(inflated).motion.sites[0]
    assert first.key == "down_blocks.0.motion_modules.0"
    # SD1.5's first level has attention: the module follows the transformer; SDXL's has none: the ResNet.
    assert first.path.endswith("input_blocks.1.1" if version not in SDXL_VERSIONS else "input_blocks.1.0")


@pytest.mark.parametrize("version", MOTION_VERSIONS)
def test_a_module_with_zero_output_is_an_exact_identity(motion_folders, sd15_mini, sdxl, version):
    """Each module returns its input bitwise (in its memory layout), so the whole model predicts bitwise what the
    image model does."""
    base = base_for(version, sd15_mini, sdxl)
    zero = seeded_motion_module(base.model.diffusion_model, version, seed=2, zero_output=True)
    motion = load(save(motion_folders.modules, "zero.safetensors", zero))
    generator = torch.Generator().manual_seed(1)
    for _, module in motion.patcher.model.named_motion_modules():
        features = torch.randn(8, module.temporal_transformer.norm.num_channels, 4, 4, generator=generator)
        assert torch.equal(module(features, videos=2), features)
    x, context, conds = inputs(base, frames=4, videos=2, seed=3)
    assert torch.equal(predict(inflate(base, motion), x, context, 2, **conds), predict(base, x, context, 2, **conds))


@pytest.mark.parametrize("version", MOTION_VERSIONS)
def test_the_inflated_model_computes_what_animatediff_computes(motion_folders, version):
    """fp64, the GroupNorm each version prescribes (v1: pooled over frames), Tune-A-Video's parts off."""
    base = full_unet("sd15_mini", seed=3, dtype=torch.float64) if version in SD1_VERSIONS else tiny_unet(
        "sdxl", seed=5, dtype=torch.float64)
    state = {key: value.double() for key, value in seeded_motion_module(
        base.model.diffusion_model, version, seed=4).items()}
    motion = load(save(motion_folders.modules, "mm64.safetensors", state))
    groupnorm = motion.spec.prescribed_groupnorm().value
    inflated = inflate(base, motion, groupnorm=groupnorm)
    x, context, conds = inputs(base, frames=5, videos=2, seed=6, dtype=torch.float64)
    image = predict(base, x, context, 2, **conds)  # loads the plain model: the reference runs its layers unpatched
    theirs = reference_denoised(
        base.model, state, x, SIGMA, context, videos=2, inflated_groupnorm=groupnorm == "per_frame",
        motion_groupnorm="video" if version == "sdxl" else "frame", **conds,
    )
    ours = predict(inflated, x, context, 2, **conds)
    assert (theirs - image).abs().max() > 1e-2  # the modules do move the prediction
    assert ((ours - theirs).norm() / theirs.norm()).item() < 1e-6


def test_videos_in_one_batch_never_mix(motion_folders, sd15_mini):
    motion = load(save(motion_folders.modules, "mm.safetensors", seeded_motion_module(
        sd15_mini.model.diffusion_model, "v2", seed=1)))
    inflated = inflate(sd15_mini, motion, attention="sparse_causal", temporal_layers=True)
    x, context, _ = inputs(sd15_mini, frames=4, videos=2, seed=7)
    changed = x.clone()
    changed[4:] += 1.0
    first, second = predict(inflated, x, context, 2), predict(inflated, changed, context, 2)
    torch.testing.assert_close(first[:4], second[:4], rtol=0, atol=1e-6)
    assert (first[4:] - second[4:]).abs().max() > 1e-2
    # within a video, frames do mix: changing frame 3 moves frame 0 through the motion modules
    changed = x.clone()
    changed[3] += 1.0
    assert (predict(inflated, changed, context, 2)[0] - first[0]).abs().max() > 1e-3


def test_the_base_model_and_the_loaded_module_stay_bitwise(motion_folders, sd15_mini):
    state = seeded_motion_module(sd15_mini.model.diffusion_model, "v3", seed=1)
    motion = load(save(motion_folders.modules, "mm.safetensors", state))
    lora = seeded_motion_lora(state, rank=4, seed=2)
    save(motion_folders.loras, "lora.safetensors", lora)
    with_lora = load("mm.safetensors", "lora.safetensors", 0.5)
    before = {key: value.clone() for key, value in sd15_mini.model.state_dict().items()}
    x, context, _ = inputs(sd15_mini, frames=4, videos=1, seed=8)
    image = predict(sd15_mini, x, context, 1)
    predict(inflate(sd15_mini, with_lora), x, context, 1)
    assert torch.equal(predict(sd15_mini, x, context, 1), image)
    for key, value in sd15_mini.model.state_dict().items():
        assert torch.equal(value, before[key]), key
    for key, value in motion.patcher.model.state_dict().items():
        assert torch.equal(value, state[key].to(value.dtype)), key


def test_a_motion_lora_adds_strength_times_up_down_as_animatediff_merges_it(motion_folders, sd15_mini):
    state = seeded_motion_module(sd15_mini.model.diffusion_model, "v2", seed=1)
    lora = seeded_motion_lora(state, rank=8, seed=2)
    save(motion_folders.modules, "mm.safetensors", state)
    save(motion_folders.loras, "lora.safetensors", lora)
    save(motion_folders.modules, "merged.safetensors", merge_motion_lora(state, lora, strength=0.7))
    x, context, _ = inputs(sd15_mini, frames=4, videos=1, seed=9)
    patched = predict(inflate(sd15_mini, load("mm.safetensors", "lora.safetensors", 0.7)), x, context, 1)
    merged = predict(inflate(sd15_mini, load("merged.safetensors")), x, context, 1)
    plain = predict(inflate(sd15_mini, load("mm.safetensors")), x, context, 1)
    torch.testing.assert_close(patched, merged, rtol=1e-5, atol=1e-5)
    assert (patched - plain).abs().max() > 1e-3


def test_more_frames_than_the_position_table_is_refused_naming_the_limit(motion_folders, sd15_mini):
    motion = load(save(motion_folders.modules, "mm_v1.safetensors", seeded_motion_module(
        sd15_mini.model.diffusion_model, "v1", seed=1)))
    inflated = inflate(sd15_mini, motion, groupnorm="per_video")
    x, context, _ = inputs(sd15_mini, frames=25, videos=1, seed=1)
    with pytest.raises(TAVInputError, match=r"Inflate UNet.*24 frames.*25 frames.*Context Windows"):
        predict(inflated, x, context, 1)


def write(folder, name: str, data: bytes) -> str:
    (folder / name).write_bytes(data)
    return name


class RunsCode:
    def __reduce__(self):
        return (print, ("this would run on load",))


def write_pickle_with_code(folder, name: str) -> str:
    data = pickle.dumps({"down_blocks.0.motion_modules.0.temporal_transformer.norm.weight": RunsCode()}, protocol=2)
    return write(folder, name, data)


@pytest.mark.parametrize(("make", "message"), [
    (lambda folder, state: save(folder, "sd.safetensors", {"model.diffusion_model.out.0.weight": torch.ones(4)}),
     "not a motion module.*Stable Diffusion checkpoint"),
    (lambda folder, state: save(folder, "lora.safetensors", {"lora_unet_down_0.lora_up.weight": torch.ones(4, 1)}),
     "not a motion module.*image LoRA"),
    (lambda folder, state: save(folder, "motion_lora.safetensors", seeded_motion_lora(state, rank=2, seed=0)),
     "motion LoRA: choose it as motion_lora"),
    (lambda folder, state: save(folder, "adapter.safetensors", {
        "down_blocks.0.motion_modules.0.transformer_blocks.0.attn1.to_q.weight": torch.ones(2, 2)}),
     "another layout .diffusers' MotionAdapter"),
    (lambda folder, state: write(folder, "cut.safetensors", b"\x10\x00\x00\x00\x00\x00\x00\x00{"),
     "not a readable safetensors file"),
    (lambda folder, state: write(folder, "cut.ckpt", b"PK\x03\x04 truncated"), "not a readable torch file"),
    (lambda folder, state: write_pickle_with_code(folder, "code.ckpt"), "weights-only loader refused it"),
    (lambda folder, state: save(folder, "holes.safetensors", {
        key: value for key, value in state.items() if "down_blocks.1." not in key}),
     "down_blocks are numbered"),
    (lambda folder, state: save(folder, "narrow.safetensors", {
        key: value[:, :-8] if key.endswith("attention_blocks.0.to_q.weight") else value
        for key, value in state.items()}),
     r"not those of an AnimateDiff v3 .*to_q.weight is \(\d+, \d+\), the model's is"),
])
def test_files_that_are_no_motion_module_are_named(motion_folders, sd15_mini, make, message):
    state = seeded_motion_module(sd15_mini.model.diffusion_model, "v3", seed=1)
    name = make(motion_folders.modules, state)
    with pytest.raises(TAVInputError, match=f"TAV Load Motion Module: input 'motion_module': {name}.*{message}"):
        load(name)


def test_a_ckpt_of_plain_tensors_loads_through_the_weights_only_loader(motion_folders, sd15_mini):
    state = seeded_motion_module(sd15_mini.model.diffusion_model, "v3", seed=1)
    torch.save({"state_dict": state}, motion_folders.modules / "v3_sd15_mm.ckpt")
    motion = load("v3_sd15_mm.ckpt")
    assert motion.spec.version == MotionVersion.V3


def test_a_module_for_another_model_is_refused_naming_module_version_and_model(motion_folders, sd15_mini, sdxl):
    name = save(motion_folders.modules, "mm_sd15.safetensors", seeded_motion_module(
        sd15_mini.model.diffusion_model, "v2", seed=1))
    with pytest.raises(TAVInputError, match=r"Inflate UNet: input 'motion_module': mm_sd15.safetensors "
                                            r"\(AnimateDiff v2 \(SD1.x.*does not fit this MODEL, a SDXL UNet"):
        inflate(sdxl, load(name))
    wide = full_unet("sd15_mini", seed=3, dtype=torch.float32)
    narrow_state = seeded_motion_module(tiny_unet("sdxl").model.diffusion_model, "sdxl", seed=1)
    with pytest.raises(TAVInputError, match="SDXL.*does not fit this MODEL, a SD15 UNet"):
        inflate(wide, load(save(motion_folders.modules, "mm_xl.safetensors", narrow_state)))


def test_a_motion_lora_for_another_module_is_refused(motion_folders, sd15_mini):
    v2 = seeded_motion_module(sd15_mini.model.diffusion_model, "v2", seed=1)
    save(motion_folders.modules, "v3.safetensors", seeded_motion_module(sd15_mini.model.diffusion_model, "v3", seed=1))
    save(motion_folders.loras, "v2_lora.safetensors", seeded_motion_lora(v2, rank=4, seed=1))
    with pytest.raises(TAVInputError, match="input 'motion_lora': v2_lora.safetensors.*made for another motion "
                                            "module.*no mid_block"):
        load("v3.safetensors", "v2_lora.safetensors")
    bad_rank = seeded_motion_lora(seeded_motion_module(sd15_mini.model.diffusion_model, "v3", seed=1), rank=4, seed=1)
    key = next(key for key in bad_rank if key.endswith("to_q_lora.up.weight"))
    bad_rank[key] = bad_rank[key][:, :2]
    save(motion_folders.loras, "broken.safetensors", bad_rank)
    with pytest.raises(TAVInputError, match="input 'motion_lora'.*do not multiply"):
        load("v3.safetensors", "broken.safetensors")


def test_a_tuned_video_longer_than_the_table_is_refused_before_tuning(motion_folders, sd15_mini):
    from comfyui_tune_a_video.nodes.one_shot_tune import OneShotTune
    from tav_dev.tiny_models import text_cond

    inflated = inflate(sd15_mini, load(save(motion_folders.modules, "v1.safetensors", seeded_motion_module(
        sd15_mini.model.diffusion_model, "v1", seed=1))))
    latents = {"samples": torch.zeros(25, 4, SIZE, SIZE)}
    with pytest.raises(TAVInputError, match=r"One-Shot Tune: input 'latents'.*24 frames.*25 frames"):
        OneShotTune.execute(inflated, latents, text_cond("sd1", 1), 1, 1e-4, 0, "blocks", "auto")


def test_a_half_precision_file_runs_in_the_models_dtype(motion_folders, sd15_mini):
    """Released modules are fp16: kept so (one copy in memory), their weights cast per call to the UNet's dtype."""
    state = seeded_motion_module(sd15_mini.model.diffusion_model, "v2", seed=1)
    half = load(save(motion_folders.modules, "half.safetensors", {key: value.half() for key, value in state.items()}))
    assert {value.dtype for value in half.patcher.model.state_dict().values()} == {torch.float16}
    rounded = {key: value.half().float() for key, value in state.items()}
    full = load(save(motion_folders.modules, "rounded.safetensors", rounded))
    x, context, _ = inputs(sd15_mini, frames=4, videos=1, seed=2)
    torch.testing.assert_close(
        predict(inflate(sd15_mini, half), x, context, 1), predict(inflate(sd15_mini, full), x, context, 1),
        rtol=1e-4, atol=1e-4,
    )
