"""The pack's UNet patches on ComfyUI's dynamic-VRAM patcher, ModelPatcherDynamic (ComfyUI 0.33+, comfy-aimdo).

ComfyUI builds checkpoints' patchers as comfy.model_patcher.CoreModelPatcher, which main.py sets to
ModelPatcherDynamic when comfy-aimdo initialises a GPU. This CPU test builds one by hand on a tiny UNet and
checks everything that does not need the GPU: the class survives clone() and Inflate UNet, every patch the
pack registers is kept, object patches go on and come off the way the dynamic loader applies them, and the
calls the dynamic patcher refuses are refused. Loading (load_models_gpu -> ModelPatcherDynamic.load) needs a
comfy-aimdo device context, i.e. a GPU: that part is a GPU check, not this test. Two tests set the flag main.py
sets with dynamic VRAM (comfy.memory_management.aimdo_enabled), which changes how comfy.ops layers are built
and loaded, and so how the pack's temporal layers come out.

Needs a ComfyUI with ModelPatcherDynamic (0.33) and the comfy-aimdo package its requirements.txt pins
(COMFYUI_PATH=... with a venv holding both); skipped otherwise, e.g. on the CI host 0.3.75.
"""

import importlib

import pytest
import torch

aimdo_control = pytest.importorskip("comfy_aimdo.control")

import comfy.ldm.modules.attention  # noqa: E402
import comfy.memory_management  # noqa: E402
import comfy.model_patcher  # noqa: E402
import comfy.patcher_extension  # noqa: E402
import comfy.utils  # noqa: E402
from comfyui_tune_a_video.comfy_glue.one_shot_tune import tune  # noqa: E402
from comfyui_tune_a_video.comfy_glue.unet_inflation import inflate_model, inflation_of, temporal_layers_of  # noqa: E402
from comfyui_tune_a_video.tav_core.inflation_config import GroupNormMode, InflationConfig  # noqa: E402
from comfyui_tune_a_video.tav_core.tuning import TuneSettings  # noqa: E402
from tav_dev.tiny_models import text_cond, tiny_unet  # noqa: E402
from tav_dev.unet_harness import denoise_via_sampler  # noqa: E402

Dynamic = getattr(comfy.model_patcher, "ModelPatcherDynamic", None)
if Dynamic is None:
    pytest.skip("this ComfyUI has no ModelPatcherDynamic (it came with 0.33)", allow_module_level=True)

GPU = torch.device("cuda", 0)  # only a label here: nothing below touches CUDA
CPU = torch.device("cpu")
WrappersMP = comfy.patcher_extension.WrappersMP


@pytest.fixture(scope="module", autouse=True)
def aimdo_library():
    """Load comfy-aimdo's library as main.py does (control.init). It needs no GPU, but main.py calls it before
    comfy is imported and comfy_aimdo.host_buffer binds the library at import, so rebind that module."""
    import comfy_aimdo.host_buffer

    if comfy_aimdo.host_buffer.lib is None:
        if not aimdo_control.init():
            pytest.skip("comfy-aimdo's library does not load on this machine")
        importlib.reload(comfy_aimdo.host_buffer)
    yield


def dynamic_unet(kind: str = "sd1", seed: int = 0):
    """A checkpoint's MODEL as ComfyUI 0.33 builds it on a GPU with dynamic VRAM (comfy/sd.py: CoreModelPatcher)."""
    plain = tiny_unet(kind, seed)
    return Dynamic(plain.model, load_device=GPU, offload_device=CPU)


def inflate(model, **settings):
    return inflate_model(model, InflationConfig(**settings), "Inflate UNet")


def block_paths(model, kind) -> list[str]:
    return [
        f"diffusion_model.{name}"
        for name, module in model.model.diffusion_model.named_modules()
        if isinstance(module, kind)
    ]


def test_a_cpu_load_device_gives_the_plain_patcher():
    """ModelPatcherDynamic.__new__ reroutes CPU models to ModelPatcher: on the CPU nothing is dynamic."""
    patcher = Dynamic(tiny_unet().model, load_device=CPU, offload_device=CPU)
    assert type(patcher) is comfy.model_patcher.ModelPatcher
    assert not patcher.is_dynamic()


def test_clone_stays_dynamic_and_keeps_attachments():
    model = dynamic_unet()
    assert model.is_dynamic()
    marker = object()
    model.set_attachments("tav_test", marker)
    clone = model.clone()
    assert type(clone) is Dynamic and clone.is_dynamic()
    assert clone.model is model.model
    assert clone.get_attachment("tav_test") is marker


@pytest.mark.parametrize("kind", ["sd1", "sdxl"])
def test_inflate_unet_on_a_dynamic_model_keeps_every_patch(kind):
    base = dynamic_unet(kind)
    inflated = inflate(base, groupnorm=GroupNormMode.PER_VIDEO)
    assert type(inflated) is Dynamic
    assert inflation_of(inflated) is not None

    blocks = block_paths(inflated, comfy.ldm.modules.attention.BasicTransformerBlock)
    attn1 = inflated.model_options["transformer_options"]["patches_replace"]["attn1"]
    assert len(attn1) == len(blocks) > 0
    for path in blocks:
        assert f"{path}.forward" in inflated.object_patches  # temporal attention after the block
    assert "diffusion_model.out.0.forward" in inflated.object_patches  # per-video GroupNorm (final norm)
    wrappers = inflated.model_options["transformer_options"]["wrappers"]
    assert wrappers[WrappersMP.DIFFUSION_MODEL] and wrappers[WrappersMP.OUTER_SAMPLE]

    temporal = inflated.get_additional_models_with_key("tav_temporal")
    assert len(temporal) == 1 and type(temporal[0]) is comfy.model_patcher.ModelPatcher  # plain, as built
    assert temporal[0].load_device == GPU and not temporal[0].is_dynamic()
    assert inflated.get_nested_additional_models() == temporal

    clone = inflated.clone()  # every later node (tune, load weights, samplers) works on clones
    assert type(clone) is Dynamic
    assert clone.object_patches == inflated.object_patches
    assert inflation_of(clone) is inflation_of(inflated)
    cloned_temporal = clone.get_additional_models_with_key("tav_temporal")
    assert type(cloned_temporal[0]) is comfy.model_patcher.ModelPatcher
    assert cloned_temporal[0].model is temporal[0].model
    assert not base.object_patches and "patches_replace" not in base.model_options["transformer_options"]


def test_object_patches_go_on_and_come_off_as_the_dynamic_loader_applies_them():
    """ModelPatcherDynamic.partially_load runs patch_model(load_weights=False) before load(); unload runs
    detach -> unpatch_model. Both are the base class's object-patch code."""
    inflated = inflate(dynamic_unet(), groupnorm=GroupNormMode.PER_VIDEO)
    paths = [key.removesuffix(".forward") for key in inflated.object_patches if key.endswith(".forward")]
    modules = [comfy.utils.get_attr(inflated.model, path) for path in paths]

    inflated.patch_model(load_weights=False)
    try:
        for path, module in zip(paths, modules, strict=True):
            assert module.forward is inflated.object_patches[f"{path}.forward"]
    finally:
        inflated.unpatch_model()  # what detach(unpatch_all=True) does on model_unload
    for module in modules:
        assert module.forward.__func__ is type(module).forward


def test_weight_patches_wrappers_compute_dtype_and_model_objects_are_recorded():
    inflated = inflate(dynamic_unet())
    blocks = block_paths(inflated, comfy.ldm.modules.attention.BasicTransformerBlock)
    keys = [f"{path}.attn1.to_q.weight" for path in blocks]

    tuned = inflated.clone()
    deltas = {key: torch.full_like(inflated.get_model_object(key), 0.01) for key in keys}
    uuid = tuned.patches_uuid
    assert set(tuned.add_patches({key: ("diff", (delta,)) for key, delta in deltas.items()})) == set(keys)
    assert tuned.patches_uuid != uuid  # the dynamic loader marks every weight dirty for a new uuid
    assert type(tuned) is Dynamic and not inflated.patches

    class Delta(torch.nn.Module):
        def __init__(self, delta):
            super().__init__()
            self.delta = torch.nn.Parameter(delta)

        def forward(self, weight):
            return weight + self.delta.to(weight.dtype)

    trainer = inflated.clone()
    trainer.set_model_compute_dtype(torch.bfloat16)
    assert trainer.get_model_object("manual_cast_dtype") == torch.bfloat16 and trainer.force_cast_weights
    assert inflated.get_model_object("manual_cast_dtype") is None
    for key in keys:
        trainer.add_weight_wrapper(key, Delta(torch.zeros_like(deltas[key])))
    assert set(trainer.weight_wrapper_patches) == set(keys)
    assert trainer.get_model_object(keys[0]) is comfy.utils.get_attr(trainer.model, keys[0])


def test_what_the_dynamic_patcher_refuses():
    model = inflate(dynamic_unet())
    with pytest.raises(AssertionError):
        model.patch_model()  # load_weights=True: "can only be to load a model out of ... model_managment"
    with pytest.raises(AssertionError):
        model.load(GPU, full_load=True)
    with pytest.raises(AssertionError):
        model.load(CPU)  # only to its own load device
    with pytest.raises(AssertionError):
        model.partially_load(GPU, force_patch_weights=True)
    with pytest.raises(RuntimeError, match="pin_weight_to_device invalid for dymamic weight loading"):
        model.pin_weight_to_device("diffusion_model.out.2.weight")
    with pytest.raises(RuntimeError, match="unpin_weight invalid for dymamic weight loading"):
        model.unpin_weight("diffusion_model.out.2.weight")
    with pytest.raises(RuntimeError, match="Hooks not implemented in ModelPatcherDynamic"):
        model.patch_hook_weight_to_device(None, {"k": []}, "k", {}, None)
    with pytest.raises(AssertionError):
        model.patch_cached_hook_weights({}, "k", None)
    # Conditioning with weight hooks makes CFGGuider swap in a non-dynamic delegate, rebuilt from the file the
    # model came from (comfy/samplers.py inner_set_conds); a model with no such record cannot have one.
    with pytest.raises(RuntimeError, match="cached_patcher_init is not initialized"):
        model.get_non_dynamic_delegate()


def test_inflate_unet_builds_real_temporal_layers_under_dynamic_vram(monkeypatch):
    """With dynamic VRAM main.py sets comfy.memory_management.aimdo_enabled (0.33 main.py:328), and then
    comfy.ops.disable_weight_init.Linear creates no weight at all until a state dict is loaded (comfy/ops.py:521-540;
    Embedding likewise). Checkpoints get theirs from the file; the pack's temporal layers are built, not loaded,
    so they must still come out with real, initialised weights (the stock Linear gave AttributeError: 'NoneType'
    object has no attribute 'shape')."""
    base = dynamic_unet()  # weights in place before the flag, as a loaded checkpoint has them
    monkeypatch.setattr(comfy.memory_management, "aimdo_enabled", True)
    inflated = inflate(base)
    layers = inflated.get_additional_models_with_key("tav_temporal")[0].model
    linears = {name: m for name, m in layers.named_modules() if isinstance(m, torch.nn.Linear)}
    assert linears and all(isinstance(m.weight, torch.nn.Parameter) for m in linears.values())
    assert all(m.weight.abs().sum() == 0 for name, m in linears.items() if name.endswith("to_out"))
    assert all(m.weight.abs().sum() > 0 for name, m in linears.items() if name.endswith("to_q"))


def test_tune_then_sample_under_dynamic_vram_matches_legacy(monkeypatch):
    """The aimdo flag also changes loading: comfy.ops.disable_weight_init.Linear._load_from_state_dict then puts the
    file's tensor in place as it is (comfy/ops.py:495-510), without casting it to the layer's dtype. Tuned temporal
    layers (fp32 from training) must still end up in the UNet's dtype and sample as without the flag. On the CPU the
    patcher stays a ModelPatcher (ModelPatcherDynamic.__new__), so this isolates the flag's effect."""
    frames, size = 4, 8
    x = torch.randn(frames, 4, size, size, generator=torch.Generator().manual_seed(3))
    positive, negative = text_cond("sd1", 1), text_cond("sd1", 2)
    results = {}
    for dynamic in (False, True):
        base = tiny_unet("sd1", seed=0, dtype=torch.float16)
        monkeypatch.setattr(comfy.memory_management, "aimdo_enabled", dynamic)
        video = inflate(base)
        settings = TuneSettings(steps=1, learning_rate=1e-3)
        tuned = tune(video, {"samples": x}, positive, settings, "One-Shot Tune").model
        dtypes = {p.dtype for p in temporal_layers_of(tuned).state_dict().values()}
        results[dynamic] = (dtypes, denoise_via_sampler(tuned, x, 2.0, positive, negative, 2.0))
        monkeypatch.setattr(comfy.memory_management, "aimdo_enabled", False)
    assert results[True][0] == results[False][0] == {torch.float16}
    torch.testing.assert_close(results[True][1], results[False][1])


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU comfy-aimdo may have a device context")
def test_loading_needs_a_comfy_aimdo_device():
    """Where a CPU test stops: load() allocates the model's virtual VRAM through a comfy-aimdo device context."""
    model = inflate(dynamic_unet())
    with pytest.raises(RuntimeError, match="comfy-aimdo device 0 is not initialized"):
        model.load(GPU)
    model.unpatch_model()


def test_motion_modules_load_and_run_alike_under_dynamic_vram(monkeypatch, tmp_path):
    """A motion module is built from comfy.ops layers and filled from its file: with the aimdo flag its weights must
    still exist in the file's values and dtype, its patches must sit on the dynamic clone, and a tune then a sample
    must come out as without the flag."""
    from comfyui_tune_a_video.comfy_glue.motion_injection import MotionAfter, motion_patcher_of
    from comfyui_tune_a_video.comfy_glue.motion_loading import load_motion_module
    from comfyui_tune_a_video.tav_core.inflation_config import AttentionMode
    from comfyui_tune_a_video.tav_core.weights_file import save_atomically
    from tav_dev.motion_module_files import seeded_motion_module

    path = tmp_path / "mm_v2.safetensors"
    state = {k: v.half() for k, v in seeded_motion_module(tiny_unet("sd15").model.diffusion_model, "v2", 1).items()}
    save_atomically(path, state, {})
    frames, size = 4, 8
    x = torch.randn(frames, 4, size, size, generator=torch.Generator().manual_seed(3))
    positive, negative = text_cond("sd1", 1), text_cond("sd1", 2)
    config = InflationConfig(attention=AttentionMode.PER_FRAME, temporal_layers=False)
    results = {}
    for dynamic in (False, True):
        # The UNets' weights in place before the flag, as a loaded checkpoint has them.
        base, plain_base = Dynamic(tiny_unet("sd15").model, load_device=GPU, offload_device=CPU), tiny_unet("sd15")
        monkeypatch.setattr(comfy.memory_management, "aimdo_enabled", dynamic)
        motion = load_motion_module(path, path.name)
        loaded = motion.patcher.model.state_dict()
        assert all(torch.equal(loaded[key], value) for key, value in state.items())
        on_gpu = inflate_model(base, config, "Inflate UNet", motion)
        assert type(on_gpu) is Dynamic and motion_patcher_of(on_gpu) is motion.patcher
        assert sum(isinstance(p, MotionAfter) for p in on_gpu.object_patches.values()) == 21
        video = inflate_model(plain_base, config, "Inflate UNet", motion)
        settings = TuneSettings(steps=1, learning_rate=1e-3, motion_rank=2)
        tuned = tune(video, {"samples": x}, positive, settings, "One-Shot Tune").model
        results[dynamic] = denoise_via_sampler(tuned, x, 2.0, positive, negative, 2.0)
        monkeypatch.setattr(comfy.memory_management, "aimdo_enabled", False)
    torch.testing.assert_close(results[True], results[False])
