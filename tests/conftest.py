"""Test setup: a real ComfyUI host on sys.path (CPU mode), the pack imported as a package, and every test
run under torch.inference_mode as ComfyUI runs nodes."""

import pytest
import torch
from tav_dev.comfy_host import COMFYUI, setup_host

pack = setup_host(cpu=True)
__all__ = ["COMFYUI", "pack"]


@pytest.fixture(scope="session", autouse=True)
def comfy_inference_mode():
    import comfy.utils

    comfy.utils.PROGRESS_BAR_ENABLED = False  # no tqdm bars in test output
    with torch.inference_mode():
        yield


def own_safetensors_folder(tmp_path, monkeypatch, folder_name: str):
    """models/<folder_name> replaced by an empty folder of the test's own."""
    import folder_paths

    folder = tmp_path / folder_name
    folder.mkdir()
    monkeypatch.setitem(folder_paths.folder_names_and_paths, folder_name, ([str(folder)], {".safetensors"}))
    return folder


@pytest.fixture
def weights_folder(tmp_path, monkeypatch):
    """A tuned-weights folder of the test's own, in place of models/tuneavideo."""
    from comfyui_tune_a_video.comfy_glue.model_folders import TUNED_WEIGHTS_FOLDER

    return own_safetensors_folder(tmp_path, monkeypatch, TUNED_WEIGHTS_FOLDER)


@pytest.fixture
def lora_folder(tmp_path, monkeypatch):
    """ComfyUI's models/loras, the test's own."""
    from comfyui_tune_a_video.comfy_glue.model_folders import COMFY_LORA_FOLDER

    return own_safetensors_folder(tmp_path, monkeypatch, COMFY_LORA_FOLDER)


@pytest.fixture
def motion_folders(tmp_path, monkeypatch):
    """Motion-module and motion-LoRA folders of the test's own, in place of AnimateDiff-Evolved's."""
    from types import SimpleNamespace

    import folder_paths
    from comfyui_tune_a_video.comfy_glue.model_folders import MOTION_LORA_FOLDER, MOTION_MODULES_FOLDER

    folders = SimpleNamespace(modules=tmp_path / "animatediff_models", loras=tmp_path / "animatediff_motion_lora")
    for name, folder in ((MOTION_MODULES_FOLDER, folders.modules), (MOTION_LORA_FOLDER, folders.loras)):
        folder.mkdir()
        extensions = set(folder_paths.supported_pt_extensions)
        monkeypatch.setitem(folder_paths.folder_names_and_paths, name, ([str(folder)], extensions))
    return folders


@pytest.fixture(scope="session")
def sd15_mini():
    """SD1.5's UNet structure at a tenth of its width (seeded): where AnimateDiff's SD1.5 modules fit."""
    from tav_dev.tiny_models import full_unet

    return full_unet("sd15_mini", seed=3, dtype=torch.float32)


@pytest.fixture(scope="session")
def sdxl():
    """A tiny SDXL-shaped UNet (three levels, the first without attention)."""
    from tav_dev.tiny_models import tiny_unet

    return tiny_unet("sdxl", seed=5)
