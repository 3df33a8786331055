"""TAV DDIM Inversion Sampler: the inversion as a SAMPLER for SamplerCustom / SamplerCustomAdvanced."""

from comfy_api.latest import io

from ..comfy_glue.ddim_editing import inversion_sampler
from .common import CATEGORY


class DDIMInversionSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="TAV_InversionSampler",
            display_name="TAV DDIM Inversion Sampler",
            category=f"{CATEGORY}/sampling",
            description=(
                "A SAMPLER that DDIM-inverts instead of denoising, for SamplerCustom(Advanced): give it the same "
                "SIGMAS you sample with (BasicScheduler, ddim_uniform), add_noise off and cfg 1; it walks them in "
                "reverse from the clean latent to noise."
            ),
            inputs=[],
            outputs=[io.Sampler.Output(tooltip="Connect to SamplerCustom's sampler input.")],
        )

    @classmethod
    def execute(cls) -> io.NodeOutput:
        return io.NodeOutput(inversion_sampler())
