"""The AnimateDiff reference (tav_dev.animatediff_reference) and its seeded motion-module files are right."""

import math

import pytest
import torch
from comfy.ldm.modules.attention import SpatialTransformer
from comfy.ldm.modules.diffusionmodules.openaimodel import Downsample, ResBlock, Upsample
from tav_dev.animatediff_reference import (
    MotionWeights,
    motion_module_forward,
    reference_denoised,
    temporal_self_attention,
)
from tav_dev.motion_module_files import (
    MOTION_VERSIONS,
    hotshot_to_animatediff,
    merge_motion_lora,
    seeded_motion_lora,
    seeded_motion_module,
    sinusoid_table,
)
from tav_dev.tiny_models import tiny_unet
from tav_dev.unet_harness import apply_unet, load_for_inference

SIGMA, SIZE = 2.0, 8


@pytest.fixture(scope="module")
def sd1():
    return tiny_unet("sd1", seed=4)


def context_dim(patcher) -> int:
    unet = patcher.model.diffusion_model
    return (
        next(m for m in unet.modules() if isinstance(m, SpatialTransformer))
        .transformer_blocks[0]
        .attn2.to_k.in_features
    )


def inputs(patcher, batch: int, seed: int):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 4, SIZE, SIZE, generator=generator)
    context = torch.randn(1, 5, context_dim(patcher), generator=generator).expand(batch, -1, -1).contiguous()
    return x, context


def module_keys(prefix: str, table: str | None) -> set[str]:
    """The 26 (+2 tables) keys of one released temporal transformer, spelled out."""
    names = [
        "norm.weight",
        "norm.bias",
        "proj_in.weight",
        "proj_in.bias",
        "proj_out.weight",
        "proj_out.bias",
        "transformer_blocks.0.ff.net.0.proj.weight",
        "transformer_blocks.0.ff.net.0.proj.bias",
        "transformer_blocks.0.ff.net.2.weight",
        "transformer_blocks.0.ff.net.2.bias",
        "transformer_blocks.0.ff_norm.weight",
        "transformer_blocks.0.ff_norm.bias",
    ]
    for n in (0, 1):
        names += [f"transformer_blocks.0.norms.{n}.weight", f"transformer_blocks.0.norms.{n}.bias"]
        attention = f"transformer_blocks.0.attention_blocks.{n}."
        names += [
            attention + name
            for name in ("to_q.weight", "to_k.weight", "to_v.weight", "to_out.0.weight", "to_out.0.bias")
        ]
        if table:
            names.append(attention + table)
    return {prefix + name for name in names}


def expected_sd15_keys(version: str) -> set[str]:
    hotshot = version == "hotshotxl"
    table = None if version == "animatelcm" else ("pos_encoder.positional_encoding" if hotshot else "pos_encoder.pe")
    middle = "temporal_attentions.{j}." if hotshot else "motion_modules.{j}.temporal_transformer."
    keys = set()
    for i in range(4):
        for j in range(2):
            keys |= module_keys(f"down_blocks.{i}." + middle.format(j=j), table)
        for j in range(3):
            keys |= module_keys(f"up_blocks.{i}." + middle.format(j=j), table)
    if version in ("v2", "animatelcm"):
        keys |= module_keys("mid_block.motion_modules.0.temporal_transformer.", table)
    return keys


@pytest.mark.parametrize("version", MOTION_VERSIONS)
def test_key_layout_for_an_sd15_shaped_unet(sd15_mini, version):
    state = seeded_motion_module(sd15_mini.model.diffusion_model, version, seed=0)
    assert set(state) == expected_sd15_keys(version)
    modules = {
        key[: -len("norm.weight")]
        for key in state
        if key.endswith(".norm.weight") and ".transformer_blocks." not in key
    }  # one GroupNorm per module
    down = [m for m in modules if m.startswith("down_blocks.")]
    up = [m for m in modules if m.startswith("up_blocks.")]
    mid = [m for m in modules if m.startswith("mid_block.")]
    assert (len(down), len(up), len(mid)) == (8, 12, 1 if version in ("v2", "animatelcm") else 0)
    assert all(value.dtype == torch.float32 for value in state.values())
    # channels of down level i = model_channels * channel_mult[i]; up level i mirrors down level 3 - i
    widths = [32, 64, 128, 128]
    for i in range(4):
        for blocks, level in (("down_blocks", i), ("up_blocks", 3 - i)):
            name = "temporal_attentions.0." if version == "hotshotxl" else "motion_modules.0.temporal_transformer."
            prefix = f"{blocks}.{level}.{name}"
            c = widths[i]
            assert state[prefix + "proj_in.weight"].shape == (c, c)
            assert state[prefix + "transformer_blocks.0.attention_blocks.1.to_q.weight"].shape == (c, c)
            assert state[prefix + "transformer_blocks.0.ff.net.0.proj.weight"].shape == (8 * c, c)
            assert state[prefix + "transformer_blocks.0.ff.net.2.weight"].shape == (c, 4 * c)


@pytest.mark.parametrize(("version", "length"), [("v1", 24), ("v2", 32), ("v3", 32), ("sdxl", 32), ("hotshotxl", 24)])
def test_position_tables_are_the_sinusoid(sd1, version, length):
    state = seeded_motion_module(sd1.model.diffusion_model, version, seed=0)
    tables = {k: v for k, v in state.items() if ".pos_encoder." in k}
    assert len(tables) == 2 * (4 + 6 + (1 if version == "v2" else 0))
    for value in tables.values():
        channels = value.shape[2]
        assert value.shape == (1, length, channels)
        position = torch.arange(length, dtype=torch.float64)[:, None]
        i = torch.arange(0, channels, 2, dtype=torch.float64)[None]
        angle = position / 10000.0 ** (i / channels)
        expected = torch.zeros(length, channels, dtype=torch.float64)
        expected[:, 0::2], expected[:, 1::2] = torch.sin(angle), torch.cos(angle)
        torch.testing.assert_close(value[0].double(), expected, atol=2e-5, rtol=0)


def test_animatelcm_files_have_no_tables_and_seeds_are_deterministic(sd1):
    unet = sd1.model.diffusion_model
    assert not any("pos_encoder" in key for key in seeded_motion_module(unet, "animatelcm", seed=0))
    a, b, c = (seeded_motion_module(unet, "v2", seed=s) for s in (7, 7, 8))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(
        a["down_blocks.0.motion_modules.0.temporal_transformer.proj_in.weight"],
        c["down_blocks.0.motion_modules.0.temporal_transformer.proj_in.weight"],
    )
    zero = seeded_motion_module(unet, "v2", seed=7, zero_output=True)
    proj_out = [k for k in zero if ".proj_out." in k]
    assert len(proj_out) == 2 * 11 and all(torch.count_nonzero(zero[k]) == 0 for k in proj_out)
    assert all(torch.count_nonzero(a[k]) > 0 for k in proj_out)


def test_hotshot_keys_convert_to_animatediff_v1_layout_on_sdxl(sdxl):
    unet = sdxl.model.diffusion_model
    hotshot = seeded_motion_module(unet, "hotshotxl", seed=1)
    assert any(k.endswith("attention_blocks.0.pos_encoder.positional_encoding") for k in hotshot)
    assert not any(".motion_modules." in k or k.startswith("mid_block") for k in hotshot)
    converted = hotshot_to_animatediff(hotshot)
    assert set(converted) == set(seeded_motion_module(unet, "v1", seed=1))
    assert set(hotshot_to_animatediff(seeded_motion_module(unet, "sdxl", seed=1))) == set(
        seeded_motion_module(unet, "sdxl", seed=1)
    )


def test_zero_output_module_gives_the_image_model_per_frame(sd15_mini):
    x, context = inputs(sd15_mini, 6, seed=1)
    plain = apply_unet(sd15_mini, x, SIGMA, context, cond_or_uncond=[0])
    unet = sd15_mini.model.diffusion_model
    for version in ("v2", "animatelcm"):
        zero = seeded_motion_module(unet, version, seed=2, zero_output=True)
        ref = reference_denoised(sd15_mini.model, zero, x, SIGMA, context, videos=2, inflated_groupnorm=True)
        torch.testing.assert_close(ref, plain, atol=1e-4, rtol=1e-4)
    # the non-inflated (v1) GroupNorms pool over frames: per frame only for one-frame videos
    zero = seeded_motion_module(unet, "v1", seed=2, zero_output=True)
    pooled = reference_denoised(sd15_mini.model, zero, x, SIGMA, context, videos=2, inflated_groupnorm=False)
    assert not torch.allclose(pooled, plain, atol=1e-2)
    single = reference_denoised(sd15_mini.model, zero, x, SIGMA, context, videos=6, inflated_groupnorm=False)
    torch.testing.assert_close(single, plain, atol=1e-4, rtol=1e-4)


def test_zero_output_on_sdxl_with_adm(sdxl):
    x, context = inputs(sdxl, 4, seed=3)
    y = torch.randn(4, 2816, generator=torch.Generator().manual_seed(4))
    load_for_inference(sdxl)
    sigmas = torch.full((4,), SIGMA)
    plain = sdxl.model.apply_model(x, sigmas, c_crossattn=context, y=y, transformer_options={"cond_or_uncond": [0]})
    unet = sdxl.model.diffusion_model
    for version in ("sdxl", "hotshotxl"):
        zero = seeded_motion_module(unet, version, seed=5, zero_output=True)
        ref = reference_denoised(sdxl.model, zero, x, SIGMA, context, videos=2, inflated_groupnorm=True, y=y)
        torch.testing.assert_close(ref, plain, atol=1e-4, rtol=1e-4)
        live = seeded_motion_module(unet, version, seed=5)
        moved = reference_denoised(sdxl.model, live, x, SIGMA, context, videos=2, inflated_groupnorm=True, y=y)
        assert (moved - plain).abs().max() > 1e-2


def test_live_module_mixes_frames_within_a_video_only(sd1):
    x, context = inputs(sd1, 6, seed=6)
    plain = apply_unet(sd1, x, SIGMA, context, cond_or_uncond=[0])
    state = seeded_motion_module(sd1.model.diffusion_model, "v3", seed=7)
    ref = reference_denoised(sd1.model, state, x, SIGMA, context, videos=2, inflated_groupnorm=True)
    assert (ref - plain).abs().max() > 1e-2
    changed = x.clone()
    changed[1] += 1.0  # a frame of the first video
    after = reference_denoised(sd1.model, state, changed, SIGMA, context, videos=2, inflated_groupnorm=True)
    assert (after[0] - ref[0]).abs().max() > 1e-3  # frame 0 sees frame 1 through the motion modules
    torch.testing.assert_close(after[3:], ref[3:], atol=1e-5, rtol=0)  # the second video does not
    alone = reference_denoised(sd1.model, state, x[3:], SIGMA, context[3:], videos=1, inflated_groupnorm=True)
    torch.testing.assert_close(alone, ref[3:], atol=1e-5, rtol=1e-5)


def _hooked_prediction(patcher, state, x, context, frames, hotshot=False):
    """ComfyUI's own UNet forward with each motion module hooked where AnimateDiff-Evolved injects it: after a
    block's last SpatialTransformer, else after its first ResBlock (so before any Upsample)."""
    unet = patcher.model.diffusion_model
    hooks = []

    def site(block):
        transformers = [layer for layer in block if isinstance(layer, SpatialTransformer)]
        if transformers:
            return transformers[-1]
        resblocks = [layer for layer in block if isinstance(layer, ResBlock)]
        return resblocks[0] if resblocks else None

    def attach(layer, prefix):
        weights = MotionWeights(state, prefix, hotshot, set())
        if weights.has("norm.weight"):
            hooks.append(layer.register_forward_hook(lambda m, a, out: motion_module_forward(weights, out, frames)))

    naming = "temporal_attentions.{j}." if hotshot else "motion_modules.{j}.temporal_transformer."
    for blocks, name in ((unet.input_blocks, "down_blocks"), (unet.output_blocks, "up_blocks")):
        level, j = 0, 0
        for block in blocks:
            if any(isinstance(layer, Downsample) for layer in block):
                level, j = level + 1, 0
                continue
            layer = site(block)
            if layer is None:  # the input conv
                continue
            attach(layer, f"{name}.{level}." + naming.format(j=j))
            j += 1
            if any(isinstance(layer, Upsample) for layer in block):
                level, j = level + 1, 0
    attach(site(unet.middle_block), "mid_block.motion_modules.0.temporal_transformer.")
    try:
        return apply_unet(patcher, x, SIGMA, context, cond_or_uncond=[0])
    finally:
        for hook in hooks:
            hook.remove()


@pytest.mark.parametrize("version", ["v2", "hotshotxl"])
def test_module_sites_match_hooks_in_comfys_own_forward(sd15_mini, version):
    x, context = inputs(sd15_mini, 4, seed=8)
    state = seeded_motion_module(sd15_mini.model.diffusion_model, version, seed=9)
    ref = reference_denoised(sd15_mini.model, state, x, SIGMA, context, videos=2, inflated_groupnorm=True)
    hooked = _hooked_prediction(sd15_mini, state, x, context, frames=2, hotshot=version == "hotshotxl")
    torch.testing.assert_close(ref, hooked, atol=1e-4, rtol=1e-4)
    if version == "hotshotxl":
        converted = reference_denoised(
            sd15_mini.model, hotshot_to_animatediff(state), x, SIGMA, context, videos=2, inflated_groupnorm=True
        )
        torch.testing.assert_close(converted, ref, atol=0, rtol=0)


class _TorchMotionModule(torch.nn.Module):
    """A second transcription of TemporalTransformer3DModel from torch.nn layers, loaded from the file's keys."""

    def __init__(self, channels: int, table: torch.Tensor):
        super().__init__()
        self.norm = torch.nn.GroupNorm(32, channels, eps=1e-6)
        self.proj_in, self.proj_out = torch.nn.Linear(channels, channels), torch.nn.Linear(channels, channels)
        self.norms = torch.nn.ModuleList([torch.nn.LayerNorm(channels) for _ in range(2)])
        self.attentions = torch.nn.ModuleList(
            [torch.nn.MultiheadAttention(channels, 8, batch_first=True) for _ in range(2)]
        )
        self.ff_in, self.ff_out = torch.nn.Linear(channels, 8 * channels), torch.nn.Linear(4 * channels, channels)
        self.ff_norm = torch.nn.LayerNorm(channels)
        self.table = table

    def load(self, state: dict, prefix: str):
        block = prefix + "transformer_blocks.0."
        for name in ("norm", "proj_in", "proj_out"):
            getattr(self, name).weight.copy_(state[f"{prefix}{name}.weight"])
            getattr(self, name).bias.copy_(state[f"{prefix}{name}.bias"])
        for n in range(2):
            attention = f"{block}attention_blocks.{n}."
            mha = self.attentions[n]
            mha.in_proj_weight.copy_(torch.cat([state[attention + f"{p}.weight"] for p in ("to_q", "to_k", "to_v")]))
            mha.in_proj_bias.zero_()
            mha.out_proj.weight.copy_(state[attention + "to_out.0.weight"])
            mha.out_proj.bias.copy_(state[attention + "to_out.0.bias"])
            self.norms[n].weight.copy_(state[f"{block}norms.{n}.weight"])
            self.norms[n].bias.copy_(state[f"{block}norms.{n}.bias"])
        self.ff_in.weight.copy_(state[block + "ff.net.0.proj.weight"])
        self.ff_in.bias.copy_(state[block + "ff.net.0.proj.bias"])
        self.ff_out.weight.copy_(state[block + "ff.net.2.weight"])
        self.ff_out.bias.copy_(state[block + "ff.net.2.bias"])
        self.ff_norm.weight.copy_(state[block + "ff_norm.weight"])
        self.ff_norm.bias.copy_(state[block + "ff_norm.bias"])

    def forward(self, video: torch.Tensor) -> torch.Tensor:  # (b, c, f, h, w)
        b, c, f, h, w = video.shape
        frames = video.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w)
        tokens = self.proj_in(self.norm(frames).reshape(b, f, c, h * w).permute(0, 3, 1, 2).reshape(b * h * w, f, c))
        for norm, attention in zip(self.norms, self.attentions, strict=True):
            q = norm(tokens) + self.table[:, :f]
            tokens = attention(q, q, q, need_weights=False)[0] + tokens
        value, gate = self.ff_in(self.ff_norm(tokens)).chunk(2, dim=-1)
        tokens = self.ff_out(value * torch.nn.functional.gelu(gate)) + tokens
        out = self.proj_out(tokens).reshape(b, h * w, f, c).permute(0, 2, 3, 1).reshape(b * f, c, h, w)
        return out + frames


@pytest.mark.parametrize("version", ["v1", "animatelcm"])
def test_motion_module_math_matches_a_torch_nn_transcription(sd1, version):
    state = seeded_motion_module(sd1.model.diffusion_model, version, seed=10)
    prefix = "up_blocks.0.motion_modules.1.temporal_transformer."
    channels = state[prefix + "proj_in.weight"].shape[0]
    table = (
        sinusoid_table(64, channels)
        if version == "animatelcm"
        else state[prefix + "transformer_blocks.0.attention_blocks.0.pos_encoder.pe"]
    )
    torch_module = _TorchMotionModule(channels, table)
    torch_module.load(state, prefix)
    h = torch.randn(2 * 5, channels, 3, 4, generator=torch.Generator().manual_seed(11))
    ours = motion_module_forward(MotionWeights(state, prefix, False, set()), h, frames=5)
    theirs = torch_module(h.reshape(2, 5, channels, 3, 4).transpose(1, 2))
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)
    assert (ours - h).abs().max() > 1e-2
    # the pooled ("video") GroupNorm of AnimateDiff's sdxl branch differs
    pooled = motion_module_forward(MotionWeights(state, prefix, False, set()), h, frames=5, groupnorm="video")
    assert not torch.allclose(pooled, ours, atol=1e-3)


def test_attention_scale_and_table_limit(sd1):
    state = seeded_motion_module(sd1.model.diffusion_model, "v1", seed=12)
    prefix = "down_blocks.1.motion_modules.0.temporal_transformer."
    attention = "transformer_blocks.0.attention_blocks.0."
    weights = MotionWeights(state, prefix, False, set())
    channels = state[prefix + "proj_in.weight"].shape[0]
    tokens = torch.randn(3 * 4, 2, channels, generator=torch.Generator().manual_seed(13))
    out = temporal_self_attention(weights, attention, tokens, frames=4, table=None)
    x = tokens.reshape(3, 4, 2, channels).transpose(1, 2).reshape(6, 4, channels)
    heads = lambda t: t.reshape(6, 4, 8, channels // 8).transpose(1, 2)  # noqa: E731
    q, k, v = (heads(x @ state[prefix + attention + f"{p}.weight"].t()) for p in ("to_q", "to_k", "to_v"))
    mixed = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(channels // 8), dim=-1) @ v
    expected = mixed.transpose(1, 2).reshape(6, 4, channels) @ state[prefix + attention + "to_out.0.weight"].t()
    expected = expected + state[prefix + attention + "to_out.0.bias"]
    torch.testing.assert_close(
        out, expected.reshape(3, 2, 4, channels).transpose(1, 2).reshape(12, 2, channels), atol=1e-5, rtol=1e-5
    )
    with pytest.raises(ValueError, match="25 frames"):
        motion_module_forward(weights, torch.randn(25, channels, 2, 2), frames=25)


def test_motion_lora_layout_and_merge(sd1):
    module = seeded_motion_module(sd1.model.diffusion_model, "v2", seed=14)
    lora = seeded_motion_lora(module, rank=4, seed=15)
    blocks = sorted({k.split(".to_q.weight")[0] for k in module if k.endswith(".to_q.weight")})
    assert len(blocks) == 2 * 11
    expected = {
        f"{b}.processor.{t}_lora.{d}.weight"
        for b in blocks
        for t in ("to_q", "to_k", "to_v", "to_out")
        for d in ("down", "up")
    }
    assert set(lora) == expected
    block = blocks[0]
    channels = module[f"{block}.to_q.weight"].shape[0]
    assert lora[f"{block}.processor.to_out_lora.down.weight"].shape == (4, channels)
    assert lora[f"{block}.processor.to_out_lora.up.weight"].shape == (channels, 4)
    merged = merge_motion_lora(module, lora, strength=0.5)
    changed = {k for k in module if not torch.equal(module[k], merged[k])}
    assert changed == {
        f"{b}.{w}" for b in blocks for w in ("to_q.weight", "to_k.weight", "to_v.weight", "to_out.0.weight")
    }
    delta = lora[f"{block}.processor.to_out_lora.up.weight"] @ lora[f"{block}.processor.to_out_lora.down.weight"]
    torch.testing.assert_close(merged[f"{block}.to_out.0.weight"], module[f"{block}.to_out.0.weight"] + 0.5 * delta)
    hotshot = seeded_motion_module(sd1.model.diffusion_model, "hotshotxl", seed=14)
    hotshot_lora = seeded_motion_lora(hotshot, rank=2, seed=15)
    assert all(".motion_modules." in k and ".temporal_attentions." not in k for k in hotshot_lora)
    assert set(merge_motion_lora(hotshot, hotshot_lora)) == set(hotshot)
