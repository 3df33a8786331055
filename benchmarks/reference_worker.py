"""One-Shot tuning steps of the public reference implementation (showlab/Tune-A-Video), timed as it runs.

Not run directly: benchmarks/tune_benchmark.py --reference starts it in the reference's own environment
(scripts/reference_env.sh: diffusers 0.11.1 and an old huggingface_hub in .reference/site, the reference's
code in .reference/Tune-A-Video; fetched, never committed). Its step is train_tuneavideo.py's: encode the
frames with the VAE and the caption with CLIP, add noise, UNet3DConditionModel forward, MSE, backward
through accelerate (fp16 autocast + grad scaling), gradient clipping, AdamW; the loss is read back every
step as the reference does for its log. Weights are seeded random: speed and memory do not depend on them.
"""

import argparse
import importlib.util
import json
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

# diffusers 0.11.1 UNet2DConditionModel configs equal to dev/tav_dev/tiny_models.py's FULL_UNET_KINDS of that name.
UNETS = {
    "sd15": {"block_out_channels": (320, 640, 1280, 1280), "cross_attention_dim": 768, "attention_head_dim": 8,
             "down_block_types": ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
             "up_block_types": ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3},
    "sd15_mini": {"block_out_channels": (32, 64, 128, 128), "cross_attention_dim": 64, "attention_head_dim": 8,
                  "down_block_types": ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                  "up_block_types": ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3},
}
TEXT = {"sd15": (768, 12, 12, 3072), "sd15_mini": (64, 2, 2, 128)}  # hidden, layers, heads, intermediate
VAE = {"sd15": (128, 256, 512, 512), "sd15_mini": (32, 32, 32, 32)}
TRAINABLE = ("attn1.to_q", "attn2.to_q", "attn_temp")  # the reference's trainable_modules


def build(args, folder: Path):
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel
    from tuneavideo.models.unet import UNet3DConditionModel

    torch.manual_seed(0)
    UNet2DConditionModel(sample_size=args.size // 8, layers_per_block=2, **UNETS[args.unet]).save_pretrained(
        folder / "unet")
    config_file = folder / "unet" / "config.json"  # as SD1.5's own config.json: no mid_block_type entry
    config = json.loads(config_file.read_text())
    config.pop("mid_block_type", None)
    config_file.write_text(json.dumps(config))
    unet = UNet3DConditionModel.from_pretrained_2d(str(folder), subfolder="unet")
    hidden, layers, heads, intermediate = TEXT[args.unet]
    text_encoder = CLIPTextModel(CLIPTextConfig(hidden_size=hidden, num_hidden_layers=layers,
                                                num_attention_heads=heads, intermediate_size=intermediate))
    vae = AutoencoderKL(block_out_channels=VAE[args.unet], layers_per_block=2, latent_channels=4,
                        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)
    return unet, text_encoder, vae


def stand_in_for_xformers() -> None:
    """Let the reference take its xformers code path with torch's fused attention as the kernel.

    The GPU image has no xformers (and no wheel of it fits the carry limit), and the reference's README asks
    for it to avoid running out of memory. Only the kernel is swapped: xformers.ops.memory_efficient_attention
    (q, k, v, attn_bias) on (batch*heads, tokens, channels) tensors, scale 1/sqrt(channels), is exactly
    scaled_dot_product_attention on the same tensors; the reference's own enable and forward code runs (on
    the CPU, with its CUDA check bypassed, three steps gave the default attention's losses to 1e-7).
    """
    from types import SimpleNamespace

    import diffusers.models.attention as diffusers_attention
    import torch.nn.functional as F
    import tuneavideo.models.attention as reference_attention

    def memory_efficient_attention(query, key, value, attn_bias=None):
        batch = (query.unsqueeze(0), key.unsqueeze(0), value.unsqueeze(0))
        return F.scaled_dot_product_attention(*batch, attn_mask=attn_bias).squeeze(0)

    kernel = SimpleNamespace(ops=SimpleNamespace(memory_efficient_attention=memory_efficient_attention))
    for module in (diffusers_attention, reference_attention):
        module.xformers = kernel
        module.is_xformers_available = lambda: True


def run(args) -> dict:
    import torch
    import torch.nn.functional as F
    from accelerate import Accelerator
    from diffusers import DDPMScheduler
    from einops import rearrange

    started = time.perf_counter()
    accelerator = Accelerator(mixed_precision=args.mixed_precision, cpu=not args.gpu)
    with tempfile.TemporaryDirectory() as folder:
        unet, text_encoder, vae = build(args, Path(folder))
    noise_scheduler = DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                    num_train_timesteps=1000)
    vae.requires_grad_(False)
    text_encoder.requires_grad_(False)
    unet.requires_grad_(False)
    for name, module in unet.named_modules():
        if name.endswith(TRAINABLE):
            for params in module.parameters():
                params.requires_grad = True
    attention = "default"
    if args.xformers:
        has_xformers = importlib.util.find_spec("xformers") is not None
        if not has_xformers:
            stand_in_for_xformers()
        try:
            unet.enable_xformers_memory_efficient_attention()
            attention = "xformers" if has_xformers else "SDPA for xformers"
        except Exception as error:  # the reference's own fallback is to refuse; we report and go on
            attention = f"default (xformers unavailable: {type(error).__name__})"
    if args.checkpointing:
        unet.enable_gradient_checkpointing()
    optimizer = torch.optim.AdamW(unet.parameters(), lr=3e-5, betas=(0.9, 0.999), weight_decay=1e-2, eps=1e-8)
    unet, optimizer = accelerator.prepare(unet, optimizer)
    weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(accelerator.mixed_precision, torch.float32)
    device = accelerator.device
    text_encoder.to(device, dtype=weight_dtype)
    vae.to(device, dtype=weight_dtype)
    generator = torch.Generator().manual_seed(0)
    pixel_values = (torch.rand(1, args.frames, 3, args.size, args.size, generator=generator) * 2 - 1).to(device)
    prompt_ids = torch.randint(0, 1000, (1, 77), generator=generator).to(device)
    build_s = time.perf_counter() - started
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    unet.train()
    step_times, losses = [], []
    for _ in range(args.steps):
        step_started = time.perf_counter()
        with accelerator.accumulate(unet):
            pixels = rearrange(pixel_values.to(weight_dtype), "b f c h w -> (b f) c h w")
            latents = vae.encode(pixels).latent_dist.sample()
            latents = rearrange(latents, "(b f) c h w -> b c f h w", f=args.frames) * 0.18215
            noise = torch.randn_like(latents)
            timesteps = torch.randint(0, noise_scheduler.num_train_timesteps, (1,), device=device).long()
            noisy_latents = noise_scheduler.add_noise(latents, noise, timesteps)
            encoder_hidden_states = text_encoder(prompt_ids)[0]
            model_pred = unet(noisy_latents, timesteps, encoder_hidden_states).sample
            loss = F.mse_loss(model_pred.float(), noise.float(), reduction="mean")
            losses.append(accelerator.gather(loss.repeat(1)).mean().item())
            accelerator.backward(loss)
            if accelerator.sync_gradients:
                accelerator.clip_grad_norm_(unet.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad()
        step_times.append(time.perf_counter() - step_started)
    peak_mb = (torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda"
               else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return {"median_step_s": statistics.median(step_times[2:] or step_times), "peak_mb": peak_mb,
            "build_s": build_s, "device": str(device), "attention": attention, "losses": losses,
            "mixed_precision": accelerator.mixed_precision}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--unet", choices=sorted(UNETS), default="sd15_mini")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--gpu", action="store_true")
    parser.add_argument("--mixed-precision", default="fp16", help="the reference's default; 'no' on a CPU")
    parser.add_argument("--xformers", action="store_true", help="the reference's default on a GPU")
    parser.add_argument("--checkpointing", type=lambda v: v == "on", default=True)
    args = parser.parse_args()
    print(json.dumps(run(args)))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
