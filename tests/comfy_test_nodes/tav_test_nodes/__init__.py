"""Test-only ComfyUI nodes, loaded by the test server through extra_model_paths (never shipped to users).

TAVTest_TinyModelLoader gives a tiny seeded SD1.x/SD2.x/SDXL-shaped MODEL, a tiny CLIP and VAE, and
TAVTest_TinyControlLoader a tiny ControlNet or T2I-Adapter, all built from ComfyUI's own classes,
standing in for checkpoints that cannot be downloaded here. TAVTest_FailNextSave makes the pack's next
weights save fail as a full disk would.
"""

import errno
import sys

from tav_dev.tiny_models import UNET_KINDS, tiny_clip, tiny_controlnet, tiny_t2i_adapter, tiny_unet, tiny_vae


class TinyModelLoader:
    CATEGORY = "Tune-A-Video/testing"
    RETURN_TYPES = ("MODEL", "CLIP", "VAE")
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"kind": (sorted(UNET_KINDS),), "seed": ("INT", {"default": 0, "min": 0, "max": 2**31})}}

    def load(self, kind: str, seed: int):
        return (tiny_unet(kind, seed), tiny_clip(seed), tiny_vae(seed))


class TinyControlLoader:
    CATEGORY = "Tune-A-Video/testing"
    RETURN_TYPES = ("CONTROL_NET",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"kind": (["controlnet", "t2i_adapter"],), "seed": ("INT", {"default": 0, "min": 0})}}

    def load(self, kind: str, seed: int):
        return (tiny_controlnet("sd1", seed) if kind == "controlnet" else tiny_t2i_adapter(seed),)


class FailNextSave:
    """Passes the MODEL on, and makes the pack's next save of tuned weights raise ENOSPC (once)."""

    CATEGORY = "Tune-A-Video/testing"
    RETURN_TYPES = ("MODEL",)
    FUNCTION = "arm"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",)}}

    def arm(self, model):
        folders = [m for name, m in sys.modules.items() if name.endswith("comfy_glue.model_folders")]
        if not folders:
            raise RuntimeError("the Tune-A-Video pack is not loaded in this server")
        for module in folders:
            original = module.save_atomically

            def full_disk(path, tensors, metadata, module=module, original=original):
                module.save_atomically = original
                raise OSError(errno.ENOSPC, "No space left on device", str(path))

            module.save_atomically = full_disk
        return (model,)


NODE_CLASS_MAPPINGS = {
    "TAVTest_TinyModelLoader": TinyModelLoader, "TAVTest_TinyControlLoader": TinyControlLoader,
    "TAVTest_FailNextSave": FailNextSave,
}
