"""The embedded demo model through ComfyUI's stock nodes: autoencoder fidelity, latent layout, quality gate."""

import dataclasses
import math

import numpy as np
import pytest
import torch
from comfyui_tune_a_video.nodes.load_demo_model import LoadDemoModel
from comfyui_tune_a_video.shapes_demo.judge import judge
from comfyui_tune_a_video.shapes_demo.world import (
    BACKGROUNDS,
    COLOURS,
    object_coverage,
    object_mask,
    random_scene,
    render,
)
from tav_dev.demo_gate import GATE_CFG, GATE_STEPS

import nodes as comfy_nodes

GATE_PROMPTS = 200


@pytest.fixture(scope="module")
def demo():
    return LoadDemoModel.execute().result


def test_autoencoder_round_trip_through_stock_vae_nodes(demo):
    _, _, vae = demo
    rng = np.random.default_rng(11)
    images = np.stack([render(random_scene(rng)) for _ in range(200)])
    pixels = torch.from_numpy(images).float() / 255.0
    (latent,) = comfy_nodes.VAEEncode().encode(vae, pixels)
    assert latent["samples"].shape == (200, 4, 8, 8)
    (decoded,) = comfy_nodes.VAEDecode().decode(vae, latent)
    mse = float(((decoded - pixels) ** 2).mean())
    assert 10 * math.log10(1.0 / mse) >= 25.0


def encode(vae, images: np.ndarray) -> np.ndarray:
    (latent,) = comfy_nodes.VAEEncode().encode(vae, torch.from_numpy(images).float() / 255.0)
    return latent["samples"].numpy()


def test_latent_channel_zero_says_where_the_object_is_whatever_its_colour(demo):
    """Inverted noise keeps the source's motion through an edit only if position is not written in colour."""
    _, _, vae = demo
    rng = np.random.default_rng(13)
    scenes = [random_scene(rng) for _ in range(100)]
    images = np.stack([render(scene) for scene in scenes])
    latents = encode(vae, images)
    correlation = np.corrcoef(latents[:, 0].ravel(), object_coverage(object_mask(images), 8).ravel())[0, 1]
    assert correlation >= 0.95

    worst = 1.0
    for scene in scenes[:24]:
        recoloured = [dataclasses.replace(scene, colour=colour) for colour in COLOURS if colour != scene.background]
        plain = np.full((1, 64, 64, 3), BACKGROUNDS[scene.background], np.uint8)
        objects = encode(vae, np.stack([render(twin) for twin in recoloured])) - encode(vae, plain)
        directions = objects.reshape(len(recoloured), -1)
        directions /= np.linalg.norm(directions, axis=1, keepdims=True)
        worst = min(worst, float((directions @ directions.T).min()))
    assert worst > 0.0, f"two colours of one object point apart in latent space (cosine {worst:.2f})"


def test_quality_gate_on_seeded_prompts(demo):
    model, clip, vae = demo
    rng = np.random.default_rng(12)
    (negative,) = comfy_nodes.CLIPTextEncode().encode(clip, "")
    latent = {"samples": torch.zeros(1, 4, 8, 8)}
    right = {"colour": 0, "shape": 0, "background": 0}
    for number in range(GATE_PROMPTS):
        scene = random_scene(rng)
        (positive,) = comfy_nodes.CLIPTextEncode().encode(clip, scene.caption)
        (samples,) = comfy_nodes.KSampler().sample(
            model, number, GATE_STEPS, GATE_CFG, "ddim", "ddim_uniform", positive, negative, latent
        )
        (image,) = comfy_nodes.VAEDecode().decode(vae, samples)
        verdict = judge((image[0].numpy() * 255).round().astype(np.uint8))
        right["colour"] += verdict.colour == scene.colour
        right["shape"] += verdict.shape == scene.shape
        right["background"] += verdict.background == scene.background
    rates = {name: count / GATE_PROMPTS for name, count in right.items()}
    assert rates["colour"] >= 0.95 and rates["shape"] >= 0.85 and rates["background"] >= 0.95, rates
