"""Every example workflow in the real frontend (headless Chromium): loads with no missing node and no
invalid widget value, then runs to success with the tiny test models swapped in and short settings."""

import json
import shutil
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from browser import CHROMIUM, comfy_page
from comfy_server import make_server, workflow_to_prompt
from comfyui_tune_a_video.comfy_glue.one_shot_tune import tune
from comfyui_tune_a_video.comfy_glue.unet_inflation import inflate_model
from comfyui_tune_a_video.tav_core.inflation_config import InflationConfig
from comfyui_tune_a_video.tav_core.tuned_weights_file import to_file_contents
from comfyui_tune_a_video.tav_core.tuning import TuneSettings
from comfyui_tune_a_video.tav_core.weights_file import save_atomically
from safetensors.torch import save_file
from tiny_models import text_cond, tiny_unet

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools"))
from example_workflow_specs import (  # noqa: E402
    CHECKPOINT,
    CONTROLNET,
    DEMO_CLIP,
    SOURCE_VIDEO,
    STYLE_LORA,
    TUNED_WEIGHTS,
)
from shapes_clips import CLIPS_FOLDER  # noqa: E402

WORKFLOWS = sorted((REPO / "example_workflows").glob("*.json"))
ARTIFACTS = REPO / "test-artifacts"
# Short settings for a 2-core CPU; everything else runs as saved.
SHORT_SETTINGS = {
    "TAV_SampleFrames": {"count": 4, "stride": 1, "width": 64, "height": 64},
    "TAV_OneShotTune": {"steps": 2},
    "TAV_DDIMInvertVideo": {"steps": 3},
    "TAV_Sample": {"steps": 3},
}
# Loaders of weights that cannot exist here, replaced by the tiny test models (same outputs, same order).
SWAPS = {
    "CheckpointLoaderSimple": ("TAVTest_TinyModelLoader", {"kind": "sd1", "seed": 0}),
    "ControlNetLoader": ("TAVTest_TinyControlLoader", {"kind": "controlnet", "seed": 0}),
}

CHECK_WIDGETS_JS = """
async (workflow) => {
  await window.app.loadGraphData(workflow);
  const missing = workflow.nodes.map((n) => n.type).filter((t) => !LiteGraph.registered_node_types[t]);
  const invalid = [];
  for (const node of window.app.graph._nodes) {
    for (const w of node.widgets || []) {
      if (w.type === "combo") {
        const values = typeof w.options.values === "function" ? w.options.values() : w.options.values;
        if (!values.includes(w.value)) invalid.push(`${node.type}.${w.name}=${w.value}`);
      } else if (w.type === "number") {
        if ((w.options.min !== undefined && w.value < w.options.min) ||
            (w.options.max !== undefined && w.value > w.options.max)) invalid.push(`${node.type}.${w.name}=${w.value}`);
      }
    }
  }
  return {missing, invalid};
}
"""

QUEUE_PROMPT_JS = """
async (settings) => {
  for (const node of window.app.graph._nodes) {
    for (const [name, value] of Object.entries(settings[node.type] || {})) {
      node.widgets.find((w) => w.name === name).value = value;
    }
  }
  return (await window.app.graphToPrompt()).output;
}
"""


def write_source_video(path: Path, frames: int = 12, size: int = 64) -> None:
    """A small real MP4: a bright square crossing a dark background."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 24, (size, size))
    for f in range(frames):
        frame = np.full((size, size, 3), 40, np.uint8)
        cv2.rectangle(frame, (4 + 3 * f, 20), (20 + 3 * f, 36), (40, 200, 240), -1)
        writer.write(frame)
    writer.release()


def write_tiny_lora(path: Path) -> None:
    """A real LoRA for the tiny sd1 UNet, in ComfyUI's generic key format."""
    generator = torch.Generator().manual_seed(0)
    tensors = {}
    for block in ("input_blocks.1.1", "output_blocks.3.1"):
        key = f"diffusion_model.{block}.transformer_blocks.0.attn2.to_k"
        tensors[f"{key}.lora_up.weight"] = 0.1 * torch.randn(32, 2, generator=generator)
        tensors[f"{key}.lora_down.weight"] = 0.1 * torch.randn(2, 32, generator=generator)
    save_file(tensors, str(path))


def write_tuned_weights(path: Path) -> None:
    """Weights tuned on the test loader's tiny sd1 model, so TAV Load Tuned Weights finds its base."""
    model = inflate_model(tiny_unet("sd1", seed=0), InflationConfig(), "Inflate UNet")
    latent = {"samples": torch.randn(4, 4, 8, 8, generator=torch.Generator().manual_seed(0))}
    result = tune(model, latent, text_cond("sd1", 1), TuneSettings(steps=1, learning_rate=1e-4), "One-Shot Tune")
    save_atomically(path, *to_file_contents(result.weights, torch.float16))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    if not CHROMIUM.exists():
        pytest.fail("Chromium is missing: scripts/dev_env.sh installs Debian's chromium package")
    workdir = tmp_path_factory.mktemp("workflows")
    folders = {name: workdir / "models" / name for name in ("checkpoints", "controlnet", "loras")}
    for folder in folders.values():
        folder.mkdir(parents=True)
    (folders["checkpoints"] / CHECKPOINT).write_bytes(b"listed only: swapped for the tiny test model")
    (folders["controlnet"] / CONTROLNET).write_bytes(b"listed only: swapped for the tiny test ControlNet")
    write_tiny_lora(folders["loras"] / STYLE_LORA)
    server = make_server(workdir, folders)
    server.input_dir.mkdir(parents=True)
    write_source_video(server.input_dir / SOURCE_VIDEO)
    shutil.copyfile(CLIPS_FOLDER / DEMO_CLIP, server.input_dir / DEMO_CLIP)
    write_tuned_weights(server.tuned_weights_dir / TUNED_WEIGHTS)
    server.start()
    yield server
    server.stop()


def test_there_are_five_workflows():
    assert len(WORKFLOWS) == 5


def test_template_browser_lists_the_workflows(server):
    templates = server.get("/workflow_templates")
    listed = next(names for pack, names in templates.items() if "tune-a-video" in pack)
    assert sorted(listed) == sorted(path.stem for path in WORKFLOWS)


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_workflow_loads_and_runs(server, path):
    workflow = json.loads(path.read_text())
    notes = [n for n in workflow["nodes"] if n["type"] == "Note"]
    assert notes and all(len(n["widgets_values"][0]) > 200 for n in notes), "every workflow explains itself"
    with comfy_page(server.url) as page:
        result = page.evaluate(CHECK_WIDGETS_JS, workflow)
        assert result["missing"] == [], result
        assert result["invalid"] == [], result
        page.wait_for_timeout(500)
        body = page.inner_text("body")
        assert "Invalid workflow" not in body, body[body.find("Invalid workflow"):][:2000]
        page.keyboard.press("Escape")  # the first-start template dialog
        page.set_viewport_size({"width": 2600, "height": 1500})
        page.evaluate("() => { window.app.canvas.ds.scale = 0.62; window.app.canvas.ds.offset = [220, 560]; "
                      "window.app.canvas.setDirty(true, true); }")
        page.wait_for_timeout(500)
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / f"{path.stem}.png"))
        as_saved = page.evaluate(QUEUE_PROMPT_JS, {})
        prompt = page.evaluate(QUEUE_PROMPT_JS, SHORT_SETTINGS)
    object_info = server.get("/object_info")
    for node in as_saved.values():  # frontend-only extras: titles and preview widgets no node reads
        node.pop("_meta", None)
        schema = object_info[node["class_type"]]["input"]
        known = {**schema.get("required", {}), **schema.get("optional", {})}
        node["inputs"] = {name: value for name, value in node["inputs"].items() if name in known}
    assert workflow_to_prompt(workflow, object_info) == as_saved, "UI -> API conversion differs from the frontend's"
    for node in prompt.values():
        if node["class_type"] in SWAPS:
            node["class_type"], node["inputs"] = SWAPS[node["class_type"]]
    entry = server.run_prompt(prompt, timeout=600)
    assert entry["status"]["status_str"] == "success", entry["status"]
    saved = list((server.output_dir / "tuneavideo").glob("*.mp4"))
    assert saved, "no edited video was written"
