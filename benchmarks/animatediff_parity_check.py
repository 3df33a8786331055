"""The pack's motion-module inflation against the original AnimateDiff code, on the same seeded weights.

    ANIMATEDIFF_SOURCE=/path/to/AnimateDiff .venv/bin/python benchmarks/animatediff_parity_check.py

Needs diffusers 0.11.1 in .reference/site (scripts/reference_env.sh builds it) and a checkout of guoyww/AnimateDiff
(its animatediff/ package; fetched, never committed). The pack side builds a tiny SD1.5-shaped UNet (four levels,
two ResNets each) and a seeded motion module of each version in AnimateDiff's file layout, inflates the UNet the
AnimateDiff way (attention per_frame, no temporal layers, the GroupNorm the version prescribes) and records its
noise prediction for a seeded video; the reference side (this file again, in the reference's environment) builds
AnimateDiff's own UNet3DConditionModel with the version's inference settings, loads the same 2-D weights (through
ComfyUI's diffusers key mapping) and motion-module weights, and predicts the same input. fp64 on both sides;
prints the relative error per version and exits non-zero above the tolerance.
"""

import inspect
import os
import sys
from pathlib import Path

VERSIONS = {  # version: (mid-block module, use_inflated_groupnorm), from AnimateDiff's configs/inference/*.yaml
    "v1": (False, False), "v2": (True, True), "v3": (False, True),
}
FRAMES, SIZE, TIMESTEP, TOLERANCE = 5, 8, 500, 1e-6


def pack_side(folder: Path) -> None:
    from tav_dev.comfy_host import setup_host

    setup_host(cpu=True)
    import torch
    from comfyui_tune_a_video.comfy_glue.motion_loading import load_motion_module
    from comfyui_tune_a_video.comfy_glue.reference_unet import spatial_keys
    from comfyui_tune_a_video.comfy_glue.unet_inflation import inflate_model
    from comfyui_tune_a_video.tav_core.inflation_config import AttentionMode, InflationConfig
    from comfyui_tune_a_video.tav_core.reference_unet import diffusers_config
    from comfyui_tune_a_video.tav_core.weights_file import save_atomically
    from tav_dev.motion_module_files import seeded_motion_module
    from tav_dev.tiny_models import CONTEXT_DIM, tiny_unet
    from tav_dev.unet_harness import apply_unet

    generator = torch.Generator().manual_seed(0)
    base = tiny_unet("sd15", seed=0, dtype=torch.float64)
    unet_config = base.model.model_config.unet_config
    spatial = {d: base.get_model_object(c) for d, c in spatial_keys(base, unet_config).items()}
    sampling = base.model.model_sampling
    sigma = float(sampling.sigma(torch.tensor(float(TIMESTEP))))
    noisy = torch.randn(FRAMES, 4, SIZE, SIZE, generator=generator, dtype=torch.float64)
    context = torch.randn(1, 7, CONTEXT_DIM, generator=generator, dtype=torch.float64)
    results = {}
    with torch.inference_mode():
        for version in VERSIONS:
            state = {k: v.double() for k, v in seeded_motion_module(base.model.diffusion_model, version, 4).items()}
            path = folder / f"mm_{version}.safetensors"
            save_atomically(path, state, {})
            motion = load_motion_module(path, path.name)
            config = InflationConfig(attention=AttentionMode.PER_FRAME, temporal_layers=False,
                                     groupnorm=motion.spec.prescribed_groupnorm())
            model = inflate_model(base, config, "Inflate UNet", motion)
            denoised = apply_unet(model, noisy, sigma, context.expand(FRAMES, -1, -1), [0])
            results[version] = {"epsilon": (noisy - denoised) / sigma, "motion": state}
    torch.save({
        "config": diffusers_config(unet_config, 64, False), "spatial": {k: v.clone() for k, v in spatial.items()},
        "sample": noisy / (sigma**2 + 1) ** 0.5, "context": context, "results": results,
        "timestep": float(sampling.timestep(torch.tensor(sigma))),
    }, folder / "check.pt")


def reference_side(folder: Path) -> dict:
    import torch
    from animatediff.models.unet import UNet3DConditionModel
    from einops import rearrange

    data = torch.load(folder / "check.pt")
    accepted = inspect.signature(UNet3DConditionModel.__init__).parameters
    config = {key: value for key, value in data["config"].items() if key in accepted}
    sample = rearrange(data["sample"], "(b f) c h w -> b c f h w", b=1)
    errors = {}
    for version, (mid_block, inflated_groupnorm) in VERSIONS.items():
        unet = UNet3DConditionModel(
            **config, use_inflated_groupnorm=inflated_groupnorm, use_motion_module=True,
            motion_module_resolutions=[1, 2, 4, 8], motion_module_mid_block=mid_block, motion_module_type="Vanilla",
            motion_module_kwargs={
                "num_attention_heads": 8, "num_transformer_block": 1,
                "attention_block_types": ["Temporal_Self", "Temporal_Self"], "temporal_position_encoding": True,
                "temporal_attention_dim_div": 1, "zero_initialize": True,
            },
        ).double().eval()
        weights = {**data["spatial"], **data["results"][version]["motion"]}
        # AnimateDiff's loader skips the files' position tables and uses the same sinusoid, computed.
        weights = {key: value for key, value in weights.items() if not key.endswith("pos_encoder.pe")}
        missing, unexpected = unet.load_state_dict(weights, strict=False)
        assert not unexpected and all(key.endswith("pos_encoder.pe") for key in missing), (missing, unexpected)
        with torch.no_grad():
            out = unet(sample, torch.tensor([data["timestep"]]), data["context"]).sample
        theirs = rearrange(out, "b c f h w -> (b f) c h w")
        ours = data["results"][version]["epsilon"]
        errors[version] = float((theirs - ours).norm() / theirs.norm())
    return errors


def main() -> None:
    from tav_dev.two_sides import run_check

    source = os.environ.get("ANIMATEDIFF_SOURCE")
    if not source and "--side" not in sys.argv:
        sys.exit("set ANIMATEDIFF_SOURCE to a checkout of guoyww/AnimateDiff")
    errors = run_check(__file__, __doc__, pack_side, reference_side, [source or ""])
    if errors is None:
        return
    print(f"AnimateDiff's UNet3DConditionModel vs the pack's inflated model, fp64, {FRAMES} frames, relative error:")
    for version, error in errors.items():
        print(f"  {version}: {error:.2e}")
    if max(errors.values()) > TOLERANCE:
        sys.exit(1)


if __name__ == "__main__":
    main()
