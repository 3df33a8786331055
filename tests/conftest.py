"""Test setup: a real ComfyUI host on sys.path (CPU mode), the pack imported as a package, and every test
run under torch.inference_mode as ComfyUI runs nodes."""

import pytest
import torch
from comfy_host import COMFYUI, setup_host

pack = setup_host(cpu=True)
__all__ = ["COMFYUI", "pack"]


@pytest.fixture(scope="session", autouse=True)
def comfy_inference_mode():
    import comfy.utils

    comfy.utils.PROGRESS_BAR_ENABLED = False  # no tqdm bars in test output
    with torch.inference_mode():
        yield
