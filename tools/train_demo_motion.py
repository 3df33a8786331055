"""Train the demo motion module for the embedded shapes-world model (a toy; reproducible from its seed).

    .venv/bin/python tools/train_demo_motion.py                    # ~45 min on a 2-core CPU
    .venv/bin/python tools/train_demo_motion.py --steps 20 --gate 4 --out /tmp/m.safetensors

Trained the AnimateDiff way: the demo image model is frozen and runs as AnimateDiff's UNet3DConditionModel does
(each frame's own spatial attention, per-frame GroupNorm), an AnimateDiff v2-layout module follows every layer of
its down and up blocks and its middle block (proj_out zero-initialised, so training starts from the image model),
and only the modules learn: epsilon MSE on generated shapes-world clips of every path kind (linear, diagonal, arc,
bounce) and 8-16 frames, one timestep per clip, 10 % empty captions, as AnimateDiff's training config. The file is
written in AnimateDiff's own key layout (fp16 safetensors) to demo_model/animatediff_models/, which the pack lists
in TAV Load Motion Module beside models/animatediff_models/. The quality gate (tav_dev.motion_gate) samples fresh
noise on seeded prompts through the pack's own nodes and judges every frame.
"""

import argparse
import copy
import json
import time
from pathlib import Path

import numpy as np
from tav_dev.motion_gate import GATE_FRAMES, GATE_PROMPTS, GATE_SEED

CLIP_FRAMES = (8, 16)  # frame counts drawn per batch, inclusive
CAPTION_DROPOUT = 0.1  # AnimateDiff's cfg_random_null_text_ratio
TABLE_ROWS = 32  # v2's position table
FIRST_TRAINING_SEED = 1_000_000  # clips of lower seeds (the benchmarks', the tests') are never trained on


def log(message: str) -> None:
    print(f"[motion {time.strftime('%H:%M:%S')}] {message}", flush=True)


def fresh_modules(unet, seed: int):
    """AnimateDiff v2-layout modules for this UNet (one per site, widths read from its blocks), seeded, with
    proj_out at zero and the sinusoid position table AnimateDiff's files hold."""
    import torch
    from comfyui_tune_a_video.comfy_glue.motion_injection import motion_sites
    from comfyui_tune_a_video.tav_core.motion_module import MotionLayout, MotionModules
    from comfyui_tune_a_video.tav_core.temporal_attention import sinusoidal_position_encoding

    sites = motion_sites(unet)

    def group(name: str) -> tuple[tuple[int, ...], ...]:
        levels: dict[int, list[int]] = {}
        for key, site in sites.items():
            if key.startswith(name + "."):
                levels.setdefault(int(key.split(".")[1]), []).append(site.width)
        return tuple(tuple(levels[level]) for level in sorted(levels))

    layout = MotionLayout(group("down_blocks"), group("up_blocks"), sites["mid_block.motion_modules.0"].width,
                          TABLE_ROWS)
    torch.manual_seed(seed)
    modules = MotionModules(layout)
    with torch.no_grad():
        for _, module in modules.named_motion_modules():
            transformer = module.temporal_transformer
            transformer.proj_out.weight.zero_()
            transformer.proj_out.bias.zero_()
            for block in transformer.transformer_blocks[0].attention_blocks:
                table = block.pos_encoder.pe
                table.copy_(sinusoidal_position_encoding(TABLE_ROWS, table.shape[-1], table.device, table.dtype)[None])
    return modules


def as_motion_value(modules, name: str):
    """The MOTION_MODULE value of in-memory modules, its spec read from their state dict as from a file."""
    import comfy.model_management
    import comfy.model_patcher
    from comfyui_tune_a_video.comfy_glue.motion_injection import MotionModule
    from comfyui_tune_a_video.tav_core.motion_module_file import module_fingerprint, read_motion_module

    tensors = modules.state_dict()
    spec, _ = read_motion_module(tensors)
    patcher = comfy.model_patcher.ModelPatcher(
        modules, load_device=comfy.model_management.get_torch_device(),
        offload_device=comfy.model_management.unet_offload_device(),
    )
    return MotionModule(spec, name, module_fingerprint(tensors), patcher)


def video_model(unet, motion):
    """The demo model run as AnimateDiff runs an image model with a motion module."""
    from comfyui_tune_a_video.comfy_glue.unet_inflation import inflate_model
    from comfyui_tune_a_video.tav_core.inflation_config import AttentionMode, GroupNormMode, InflationConfig

    config = InflationConfig(
        attention=AttentionMode.PER_FRAME, temporal_layers=False, groupnorm=GroupNormMode.PER_FRAME
    )
    return inflate_model(unet, config, "train_demo_motion", motion)


class ClipBatches:
    """Batches of seeded shapes-world clips (all path kinds), as scaled latents with their caption indices."""

    def __init__(self, vae, base_model, captions: list[str], seed: int, frame_budget: int) -> None:
        self.vae, self.base_model = vae, base_model
        self.index = {text: i for i, text in enumerate(captions)}
        self.rng = np.random.default_rng(seed)
        self.frame_budget = frame_budget

    def next(self):
        import torch
        from comfyui_tune_a_video.shapes_demo.world import random_clip

        frames = int(self.rng.integers(CLIP_FRAMES[0], CLIP_FRAMES[1] + 1))
        videos = max(1, self.frame_budget // frames)
        seeds = self.rng.integers(FIRST_TRAINING_SEED, 1 << 31, size=videos)
        clips = [random_clip(int(seed), frames=frames) for seed in seeds]
        pixels = torch.from_numpy(np.concatenate([clip.frames for clip in clips])).float() / 255.0
        latents = self.base_model.process_latent_in(self.vae.encode(pixels).float())
        return latents, [self.index[clip.caption] for clip in clips], frames


def progress_check(args, unet, clip, vae, ema) -> str:
    """A short gate on the averaged weights so far (a few prompts), to watch the module learn."""
    from tav_dev.motion_gate import motion_gate

    snapshot = copy.deepcopy(ema).requires_grad_(False)
    return motion_gate(unet, clip, vae, as_motion_value(snapshot, "check"), args.check_prompts, args.seed + 3,
                       args.gate_frames).describe()


def train(args, unet, clip, vae, modules):
    import comfy.model_management
    import torch
    from comfyui_tune_a_video.comfy_glue.one_shot_tune import trainable_attention, use_ordinary_tensors
    from comfyui_tune_a_video.shapes_demo.world import all_captions

    captions = all_captions()
    with torch.inference_mode(False):
        contexts = torch.cat([clip.encode_from_tokens(clip.tokenize(text)).float() for text in [*captions, ""]])
    motion = as_motion_value(modules, "training")
    model = video_model(unet, motion)
    comfy.model_management.load_models_gpu([model, motion.patcher], force_full_load=True)
    base = model.model
    use_ordinary_tensors(base)
    modules.requires_grad_(True).train()
    for _, module in modules.named_motion_modules():
        for block in module.temporal_transformer.transformer_blocks[0].attention_blocks:
            block.pos_encoder.pe.requires_grad_(False)
    params = [param for param in modules.parameters() if param.requires_grad]
    ema = copy.deepcopy(modules).requires_grad_(False)
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)
    sigmas = base.model_sampling.sigmas.float()
    generator = torch.Generator().manual_seed(args.seed)
    batches = ClipBatches(vae, base, captions, args.seed + 1, args.frame_budget)
    options = dict(model.model_options["transformer_options"])
    options["optimized_attention_override"] = trainable_attention
    started, window = time.monotonic(), []
    with torch.inference_mode(False):
        for step in range(args.steps):
            x0, caption_ids, frames = batches.next()
            videos = len(caption_ids)
            ids = torch.tensor(caption_ids)
            ids[torch.rand(videos, generator=generator) < CAPTION_DROPOUT] = len(captions)
            context = contexts[ids].repeat_interleave(frames, dim=0)
            t = torch.randint(0, len(sigmas), (videos,), generator=generator)
            sigma = sigmas[t].repeat_interleave(frames)
            noise = torch.randn(x0.shape, generator=generator)
            noisy = base.model_sampling.noise_scaling(sigma, noise, x0)
            denoised = base.apply_model(
                noisy, sigma, c_crossattn=context, transformer_options={**options, "cond_or_uncond": [0] * videos}
            )
            loss = (((denoised - x0) / sigma.view(-1, 1, 1, 1)) ** 2).mean()  # epsilon MSE: eps = (x0 - denoised)/sigma
            for group in optimizer.param_groups:
                group["lr"] = args.lr * min(1.0, (step + 1) / args.warmup)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if any(param.grad is None for param in params):
                raise RuntimeError("a motion-module weight got no gradient: the modules are not in the forward pass")
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            with torch.no_grad():
                decay = min(args.ema, (1 + step) / (10 + step))
                for averaged, current in zip(ema.parameters(), modules.parameters(), strict=True):
                    averaged.lerp_(current, 1 - decay)
            window.append(loss.item())
            if (step + 1) % args.log_every == 0 or step + 1 == args.steps:
                rate = (time.monotonic() - started) / (step + 1)
                log(f"step {step + 1}/{args.steps}: loss {np.mean(window):.4f} ({rate:.2f} s/step)")
                window = []
            if args.check_every and (step + 1) % args.check_every == 0:
                log(f"check at step {step + 1}: {progress_check(args, unet, clip, vae, ema)}")
                # the check sampled another clone of the demo model: patch the training model in again
                comfy.model_management.load_models_gpu([model, motion.patcher], force_full_load=True)
    comfy.model_management.unload_all_models()
    modules.load_state_dict(ema.state_dict())
    return modules.eval().requires_grad_(False)


def save_module(path: Path, modules, info: dict) -> None:
    """AnimateDiff's key layout, fp16, written atomically."""
    from comfyui_tune_a_video.tav_core.weights_file import save_atomically

    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {key: value.detach().half().contiguous() for key, value in modules.state_dict().items()}
    save_atomically(path, tensors, {"format": "animatediff/motion-module", "info": json.dumps(info)})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--frame-budget", type=int, default=64, help="frames per batch (whole clips)")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--ema", type=float, default=0.998)
    parser.add_argument("--gate", type=int, default=GATE_PROMPTS, help="seeded prompts for the quality gate")
    parser.add_argument("--gate-frames", type=int, default=GATE_FRAMES)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--log-every", type=int, default=50)
    parser.add_argument("--check-every", type=int, default=1000, help="a short gate every N steps (0: none)")
    parser.add_argument("--check-prompts", type=int, default=6)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    from tav_dev.comfy_host import setup_host

    setup_host(cpu=True)
    import torch
    from comfyui_tune_a_video.comfy_glue.demo_model import DEMO_MOTION_FILE, load_demo_model
    from tav_dev.motion_gate import motion_gate

    torch.set_num_threads(args.threads)
    started = time.monotonic()
    unet, clip, vae = load_demo_model()
    modules = fresh_modules(unet.model.diffusion_model, args.seed)
    modules = train(args, unet, clip, vae, modules)
    train_minutes = (time.monotonic() - started) / 60
    gate = motion_gate(unet, clip, vae, as_motion_value(modules, "trained"), args.gate, GATE_SEED, args.gate_frames)
    minutes = (time.monotonic() - started) / 60
    log(f"quality gate on {args.gate} prompts, {args.gate_frames} frames: {gate.describe()}; "
        f"{train_minutes:.1f} min training, {minutes:.1f} min in all")
    info = {"seed": args.seed, "train_minutes": round(train_minutes, 1), "gate": gate.as_dict(),
            "args": {k: str(v) for k, v in vars(args).items()}}
    out = args.out or DEMO_MOTION_FILE
    save_module(out, modules, info)
    log(f"wrote {out} ({out.stat().st_size / 2**20:.2f} MiB); gate {'passed' if gate.passed() else 'NOT passed'}")


if __name__ == "__main__":
    main()
