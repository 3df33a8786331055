"""ComfyUI Tune-A-Video: one-shot tuning of an image diffusion model on one video, then text-driven editing."""

from comfy_api.latest import ComfyExtension, io

from .nodes import NODE_CLASSES


class TuneAVideoExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return list(NODE_CLASSES)


async def comfy_entrypoint() -> TuneAVideoExtension:
    return TuneAVideoExtension()
