"""Test setup: a real ComfyUI host on sys.path (CPU mode) and the pack imported as a package."""

from comfy_host import COMFYUI, setup_host

pack = setup_host(cpu=True)
__all__ = ["COMFYUI", "pack"]
