"""Train the embedded shapes-world demo model (a toy; reproducible from its seed) and check its quality.

    .venv/bin/python tools/train_demo_model.py                       # ~50 min on a 2-core CPU
    .venv/bin/python tools/train_demo_model.py --vae-minutes 0.3 --unet-minutes 0.5 --gate 8 --out /tmp/x.safetensors

1. Autoencoder: object pixels weighted x10 (shape detail is what the small latent loses first), a tiny
   KL term, and a structure channel: latent channel 0 is held to the object's coverage of each 8x8 cell,
   at twice the other channels' spread. Without it the latent said where the object is only through its colour,
   and on a gray background some colours came out with opposite signs (green vs red: cosine -0.51), so an
   inverted green object repelled a red one and colour edits lost the motion. SD's latents carry structure
   (edges, luminance) apart from colour; this channel gives the toy that property. Then the latents are
   rescaled so that SD1's 0.18215 gives them unit spread.
2. Text: ComfyUI's CLIP classes with the stock SD1 tokenizer, a 2-layer model trained with the UNet (captions
   of this world differ in one or two words; a frozen random encoder makes them near twins, which left
   guidance weak and edits of one attribute unreliable).
3. UNet: SD1.x-config UNetModel, epsilon target, SD's schedule, 10 % caption dropout for guidance, EMA of
   both models.
4. Quality gate: --gate random prompts sampled through ComfyUI (DDIM 25 steps, cfg 2), decoded and judged.
"""

import argparse
import contextlib
import copy
import json
import math
import time
from pathlib import Path

import numpy as np
from tav_dev.demo_gate import GATE_CFG, GATE_STEPS

REPO = Path(__file__).resolve().parents[1]

SD_LATENT_SCALE = 0.18215
OBJECT_WEIGHT = 10.0
KL_WEIGHT = 1e-6
STRUCTURE_WEIGHT = 0.3
STRUCTURE_SCALE = 2.0  # channel 0's swing, in units of the other channels' spread: structure is settled first
CAPTION_DROPOUT = 0.1


def log(message: str) -> None:
    print(f"[train {time.strftime('%H:%M:%S')}] {message}", flush=True)


def scene_images(rng: np.random.Generator, count: int):
    from comfyui_tune_a_video.shapes_demo.world import random_scene, render

    scenes = [random_scene(rng) for _ in range(count)]
    return np.stack([render(scene) for scene in scenes]), scenes


def to_model_range(images: np.ndarray):
    import torch

    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def train_autoencoder(args, rng):
    import torch
    from comfyui_tune_a_video.comfy_glue.demo_model import AUTOENCODER_CONFIG
    from comfyui_tune_a_video.shapes_demo.autoencoder import FACTOR, ShapesAutoencoder
    from comfyui_tune_a_video.shapes_demo.world import object_coverage, object_mask

    torch.manual_seed(args.seed)
    autoencoder = ShapesAutoencoder(**AUTOENCODER_CONFIG)
    optimizer = torch.optim.Adam(autoencoder.parameters(), lr=1e-3)
    deadline, step = time.monotonic() + 60 * args.vae_minutes, 0
    while time.monotonic() < deadline:
        images, _ = scene_images(rng, args.vae_batch)
        x = to_model_range(images)
        mask = object_mask(images)
        weights = torch.where(torch.from_numpy(mask).unsqueeze(1), OBJECT_WEIGHT, 1.0)
        coverage = torch.from_numpy(object_coverage(mask, FACTOR)).unsqueeze(1)
        mean, log_variance = autoencoder.moments(x)
        z = mean + torch.randn_like(mean) * (0.5 * log_variance).exp()
        reconstruction = autoencoder.decode(z)
        kl = 0.5 * (mean**2 + log_variance.exp() - 1 - log_variance).mean()
        loss = (weights * (reconstruction - x) ** 2).mean() + KL_WEIGHT * kl
        loss = loss + STRUCTURE_WEIGHT * structure_loss(mean, coverage)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1
        if step % 200 == 0:
            log(f"autoencoder step {step}: loss {loss.item():.5f}")
    autoencoder.eval()
    with torch.no_grad():
        images, _ = scene_images(np.random.default_rng(args.seed + 1), 2048)
        latents = autoencoder.encode(to_model_range(images))
        autoencoder.rescale_latents(float(1.0 / SD_LATENT_SCALE / latents.std()))
    log(f"autoencoder: {step} steps")
    return autoencoder


def structure_loss(mean, coverage):
    """Channel 0 against the object's coverage of each latent cell (-1 none, +1 full, times STRUCTURE_SCALE),
    in units of the other channels' spread: louder than what they carry (colours), so that noise hides it
    last and sampling settles where the object is before what it looks like, as in SD's latents."""
    spread = mean[:, 1:].detach().std()
    return ((mean[:, :1] / spread - STRUCTURE_SCALE * (2.0 * coverage - 1.0)) ** 2).mean()


def autoencoder_quality(autoencoder, seed: int) -> dict:
    import torch
    from comfyui_tune_a_video.shapes_demo.judge import judge

    images, scenes = scene_images(np.random.default_rng(seed), 400)
    with torch.no_grad():
        decoded = autoencoder.decode(autoencoder.encode(to_model_range(images)))
    out = ((decoded.clamp(-1, 1) + 1) * 127.5).round().permute(0, 2, 3, 1).numpy().astype(np.uint8)
    mse = np.mean((out.astype(np.float64) - images) ** 2)
    verdicts = [judge(frame) for frame in out]
    return {
        "psnr_db": 10 * math.log10(255.0**2 / mse),
        "colour": np.mean([v.colour == s.colour for v, s in zip(verdicts, scenes, strict=True)]),
        "shape": np.mean([v.shape == s.shape for v, s in zip(verdicts, scenes, strict=True)]),
        "background": np.mean([v.background == s.background for v, s in zip(verdicts, scenes, strict=True)]),
    }


def caption_tokens(clip, captions: list[str]) -> list[list[int]]:
    """Token ids as CLIPTextEncode gives them to the text model (one 77-token section per caption)."""
    return [[token for token, _ in clip.tokenize(text)["l"][0]] for text in captions]


@contextlib.contextmanager
def trainable_text_model(text_model):
    """ComfyUI's CLIP layers add their residuals in place (x += attn(norm(x))), which autograd refuses when the
    norm saved x for backward; the norms get a copy of their input while training."""
    norms = [m for name, m in text_model.named_modules() if name.endswith(("layer_norm1", "layer_norm2"))]
    handles = [norm.register_forward_pre_hook(lambda _, inputs: (inputs[0].clone(), *inputs[1:])) for norm in norms]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def train_unet(args, autoencoder, clip, rng):
    import torch
    from comfyui_tune_a_video.comfy_glue.demo_model import build_unet
    from comfyui_tune_a_video.shapes_demo.seeded_init import init_seeded
    from comfyui_tune_a_video.shapes_demo.world import all_captions

    captions = all_captions()
    tokens = caption_tokens(clip, captions + [""])  # last row: the empty caption, for guidance
    text_model = clip.cond_stage_model.clip_l
    served_dtype = next(text_model.transformer.parameters()).dtype  # ComfyUI serves it in fp16 on a CPU too
    text_model.transformer.float()
    index = {text: i for i, text in enumerate(captions)}
    images, scenes = scene_images(rng, args.dataset)
    with torch.no_grad():
        latents = torch.cat([autoencoder.encode(to_model_range(images[i:i + 512]))
                             for i in range(0, len(images), 512)]) * SD_LATENT_SCALE
    caption_ids = torch.tensor([index[scene.caption] for scene in scenes])
    log(f"dataset: {len(latents)} latents, spread {latents.std():.3f}")

    unet = build_unet()
    model = unet.model.diffusion_model
    init_seeded(model, args.seed, zero=("out.2.weight", "out.2.bias", "out_layers.3.weight", "out_layers.3.bias",
                                        "proj_out.weight", "proj_out.bias"))
    trained = torch.nn.ModuleDict({"unet": model, "text": text_model.transformer}).train().requires_grad_(True)
    ema = copy.deepcopy(trained).eval().requires_grad_(False)
    sigmas = unet.model.model_sampling.sigmas.float()
    optimizer = torch.optim.AdamW(trained.parameters(), lr=args.lr, weight_decay=0.0)
    generator = torch.Generator().manual_seed(args.seed)
    deadline, step = time.monotonic() + 60 * args.unet_minutes, 0
    with trainable_text_model(text_model):
        while time.monotonic() < deadline:
            pick = torch.randint(0, len(latents), (args.unet_batch,), generator=generator)
            x0 = latents[pick]
            ids = caption_ids[pick].clone()
            ids[torch.rand(len(ids), generator=generator) < CAPTION_DROPOUT] = len(captions)
            unique_ids, position = ids.unique(return_inverse=True)
            context = text_model([tokens[i] for i in unique_ids.tolist()])[0][position]
            t = torch.randint(0, len(sigmas), (len(pick),), generator=generator)
            sigma = sigmas[t].view(-1, 1, 1, 1)
            noise = torch.randn(x0.shape, generator=generator)
            model_input = (x0 + sigma * noise) / torch.sqrt(1 + sigma**2)
            prediction = model(model_input, t.float(), context=context)
            loss = torch.nn.functional.mse_loss(prediction, noise)
            for group in optimizer.param_groups:
                group["lr"] = args.lr * min(1.0, (step + 1) / 300)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trained.parameters(), 1.0)
            optimizer.step()
            with torch.no_grad():
                decay = min(args.ema, (1 + step) / (10 + step))
                for averaged, current in zip(ema.parameters(), trained.parameters(), strict=True):
                    averaged.lerp_(current, 1 - decay)
            step += 1
            if step % 200 == 0:
                log(f"unet step {step}: loss {loss.item():.4f}")
    trained.load_state_dict(ema.state_dict())
    trained.eval().requires_grad_(False)
    text_model.transformer.to(served_dtype)
    log(f"unet: {step} steps")
    return unet, step


def quality_gate(unet, clip, vae, prompts: int, seed: int) -> dict:
    import comfy.sample
    import torch
    from comfyui_tune_a_video.shapes_demo.judge import judge
    from comfyui_tune_a_video.shapes_demo.world import random_scene

    rng = np.random.default_rng(seed)
    empty = [[clip.encode_from_tokens(clip.tokenize("")), {}]]
    right = {"colour": 0, "shape": 0, "background": 0}
    with torch.inference_mode():
        for number in range(prompts):
            scene = random_scene(rng)
            positive = [[clip.encode_from_tokens(clip.tokenize(scene.caption)), {}]]
            latent = torch.zeros(1, 4, 8, 8)
            noise = comfy.sample.prepare_noise(latent, seed + number)
            samples = comfy.sample.sample(unet, noise, GATE_STEPS, GATE_CFG, "ddim", "ddim_uniform", positive, empty,
                                          latent, disable_pbar=True, seed=seed + number)
            frame = (vae.decode(samples)[0].numpy() * 255).round().astype(np.uint8)
            verdict = judge(frame)
            right["colour"] += verdict.colour == scene.colour
            right["shape"] += verdict.shape == scene.shape
            right["background"] += verdict.background == scene.background
    return {name: count / prompts for name, count in right.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--vae-minutes", type=float, default=9.0)
    parser.add_argument("--vae-batch", type=int, default=64)
    parser.add_argument("--unet-minutes", type=float, default=38.0)
    parser.add_argument("--unet-batch", type=int, default=128)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--ema", type=float, default=0.999)
    parser.add_argument("--dataset", type=int, default=30000)
    parser.add_argument("--gate", type=int, default=200, help="random prompts for the quality gate")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    from tav_dev.comfy_host import setup_host

    setup_host(cpu=True)
    import torch
    from comfyui_tune_a_video.comfy_glue.demo_model import DEMO_MODEL_FILE, build_clip, build_vae, save_demo_model
    from comfyui_tune_a_video.shapes_demo.seeded_init import init_seeded

    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    started = time.monotonic()
    autoencoder = train_autoencoder(args, rng)
    vae_quality = autoencoder_quality(autoencoder, args.seed + 2)
    log(f"autoencoder quality: {json.dumps(vae_quality)}")
    clip = build_clip()
    init_seeded(clip.cond_stage_model, args.seed + 3)
    unet, unet_steps = train_unet(args, autoencoder, clip, rng)
    gate = quality_gate(unet, clip, build_vae(autoencoder), args.gate, args.seed + 4)
    minutes = (time.monotonic() - started) / 60
    log(f"quality gate on {args.gate} prompts: {json.dumps(gate)}; {minutes:.1f} min in all")
    info = {"seed": args.seed, "minutes": round(minutes, 1), "unet_steps": unet_steps,
            "autoencoder": vae_quality, "gate": gate, "args": {k: str(v) for k, v in vars(args).items()}}
    out = args.out or DEMO_MODEL_FILE
    save_demo_model(out, unet, clip, autoencoder, info)
    log(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MiB)")


if __name__ == "__main__":
    main()
