"""A `format reference` save, loaded by the original Tune-A-Video code, predicts what the pack's model predicts.

    .venv/bin/python benchmarks/reference_checkpoint_check.py

Needs the reference's environment (scripts/reference_env.sh: diffusers 0.11.1 in .reference/site, the reference's
tuneavideo/ package in .reference/Tune-A-Video; fetched, never committed). The pack side tunes a tiny SD1-shaped
UNet with the reference's inflation and trainable set, saves it with TAV Save Tuned Weights (format reference)
and records its noise prediction for a seeded video; the reference side (this file again, in the reference's
environment) loads the folder with UNet3DConditionModel.from_pretrained(..., subfolder="unet") and predicts the
same input. Prints both, their largest difference, and exits non-zero above the tolerance.
"""

import sys
from pathlib import Path

FRAMES, SIZE, TIMESTEP, TOLERANCE = 4, 8, 500, 1e-4


def pack_side(folder: Path) -> None:
    from tav_dev.comfy_host import setup_host

    setup_host(cpu=True)
    import folder_paths
    import torch
    from comfyui_tune_a_video.comfy_glue.model_folders import TUNED_WEIGHTS_FOLDER
    from comfyui_tune_a_video.comfy_glue.one_shot_tune import tune
    from comfyui_tune_a_video.comfy_glue.unet_inflation import inflate_model
    from comfyui_tune_a_video.nodes.tuned_weights_io import SaveTunedWeights
    from comfyui_tune_a_video.tav_core.reference_unet import REFERENCE_INFLATION
    from comfyui_tune_a_video.tav_core.tuning import Trainable, TuneSettings
    from tav_dev.tiny_models import CONTEXT_DIM, text_cond, tiny_unet
    from tav_dev.unet_harness import apply_unet

    folder_paths.folder_names_and_paths[TUNED_WEIGHTS_FOLDER] = ([str(folder)], {".safetensors"})
    generator = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        model = inflate_model(tiny_unet("sd1", seed=0), REFERENCE_INFLATION, "Inflate UNet")
        latent = {"samples": torch.randn(FRAMES, 4, SIZE, SIZE, generator=generator)}
        settings = TuneSettings(steps=3, learning_rate=1e-2, seed=1, trainable=Trainable.REFERENCE)
        result = tune(model, latent, text_cond("sd1", 1), settings, "One-Shot Tune")
        SaveTunedWeights.execute(result.weights, "check", "fp32", format="reference", model=result.model)
        sampling = result.model.model.model_sampling
        sigma = float(sampling.sigma(torch.tensor(float(TIMESTEP))))
        noisy = torch.randn(FRAMES, 4, SIZE, SIZE, generator=generator)
        context = torch.randn(1, 77, CONTEXT_DIM, generator=generator).expand(FRAMES, -1, -1).contiguous()
        denoised = apply_unet(result.model, noisy, sigma, context, [0])
        epsilon = (noisy - denoised) / sigma  # the UNet's own output, for an eps model
        sample = noisy / (sigma**2 + 1) ** 0.5  # what apply_model hands the UNet
    torch.save({"sample": sample, "context": context[:1], "epsilon": epsilon,
                "timestep": float(sampling.timestep(torch.tensor(sigma)))}, folder / "check.pt")


def reference_side(folder: Path) -> dict:
    import torch
    from einops import rearrange
    from tuneavideo.models.unet import UNet3DConditionModel

    data = torch.load(folder / "check.pt")
    unet = UNet3DConditionModel.from_pretrained(str(folder / "check"), subfolder="unet").eval()
    sample = rearrange(data["sample"], "(b f) c h w -> b c f h w", b=1)
    with torch.no_grad():
        out = unet(sample, torch.tensor([data["timestep"]]), data["context"]).sample
    theirs = rearrange(out, "b c f h w -> (b f) c h w")
    ours = data["epsilon"]
    return {"max_abs_difference": float((theirs - ours).abs().max()), "max_abs_prediction": float(ours.abs().max()),
            "timestep": data["timestep"]}


def main() -> None:
    from tav_dev.two_sides import REFERENCE_SITE, run_check

    result = run_check(__file__, __doc__, pack_side, reference_side, [str(REFERENCE_SITE.parent / "Tune-A-Video")])
    if result is None:
        return
    print(f"the reference's UNet3DConditionModel on the saved folder vs the pack's model, timestep "
          f"{result['timestep']:.1f}: largest difference {result['max_abs_difference']:.2e} "
          f"(largest prediction {result['max_abs_prediction']:.2f}; tolerance {TOLERANCE:g})")
    if result["max_abs_difference"] > TOLERANCE:
        sys.exit(1)


if __name__ == "__main__":
    main()
