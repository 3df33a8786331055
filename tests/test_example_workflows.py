"""Every example workflow in the real frontend (headless Chromium): laid out without overlaps, loads with no
missing node and no invalid widget value, is screenshotted whole into test-artifacts/, converts to the same
prompt with workflow_to_prompt as with the frontend, then runs to success with the tiny test models swapped in
and short settings; so does the later session of tune once / edit many (its groups' modes switched)."""

import copy
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from comfyui_tune_a_video.comfy_glue.one_shot_tune import tune
from comfyui_tune_a_video.comfy_glue.unet_inflation import inflate_model
from comfyui_tune_a_video.tav_core.inflation_config import InflationConfig
from comfyui_tune_a_video.tav_core.tuned_weights_file import to_file_contents
from comfyui_tune_a_video.tav_core.tuning import TuneSettings
from comfyui_tune_a_video.tav_core.weights_file import save_atomically
from safetensors.torch import save_file
from tav_dev.browser import CHROMIUM, comfy_page
from tav_dev.comfy_server import make_server, workflow_to_prompt
from tav_dev.example_workflow_specs import (
    CHECKPOINT,
    CONTROLNET,
    DEMO_CLIP,
    DEMO_MOTION_CLIP,
    MOTION_LORA_NAME,
    MOTION_MODULE,
    SOURCE_VIDEO,
    STYLE_LORA,
    TUNED_WEIGHTS,
)
from tav_dev.motion_module_files import seeded_motion_module
from tav_dev.shapes_clips import CLIPS_FOLDER
from tav_dev.tiny_models import text_cond, tiny_unet

REPO = Path(__file__).resolve().parents[1]

WORKFLOWS = sorted((REPO / "example_workflows").glob("*.json"))
ARTIFACTS = REPO / "test-artifacts"
# Short settings for a 2-core CPU; everything else runs as saved.
SHORT_SETTINGS = {
    "TAV_SampleFrames": {"count": 4, "stride": 1, "width": 64, "height": 64},
    "TAV_OneShotTune": {"steps": 2},
    "TAV_DDIMInvertVideo": {"steps": 3},
    "TAV_Sample": {"steps": 3},
    "TAV_InterpolateFrames": {"steps": 3},
}
# Loaders of weights that cannot exist here, replaced by the tiny test models (same outputs, same order).
SWAPS = {
    "CheckpointLoaderSimple": ("TAVTest_TinyModelLoader", {"kind": "sd1", "seed": 0}),
    "ControlNetLoader": ("TAVTest_TinyControlLoader", {"kind": "controlnet", "seed": 0}),
}
# A prompt with a motion module gets SD1.5's UNet structure (at tiny width), where the module in the test's
# animatediff_models folder (AnimateDiff v2's layout, seeded) fits.
MOTION_CHECKPOINT = {"kind": "sd15", "seed": 0}

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

GRAPH_EXTENT_JS = """
() => {  // [x0, y0, x1, y1] around every node (title bars included) and group
  const box = [Infinity, Infinity, -Infinity, -Infinity];
  const add = (x, y, w, h) => {
    box[0] = Math.min(box[0], x); box[1] = Math.min(box[1], y);
    box[2] = Math.max(box[2], x + w); box[3] = Math.max(box[3], y + h);
  };
  for (const node of window.app.graph._nodes) add(node.pos[0], node.pos[1] - 30, node.size[0], node.size[1] + 30);
  for (const group of window.app.graph._groups) add(...group._bounding);
  return box;
}
"""
SCALE = 0.62  # the frontend draws widgets' text from a zoom of 0.6 up
MARGINS = {"left": 90, "top": 110, "right": 60, "bottom": 120}  # side bar, tabs and menus, zoom buttons
SESSIONS = ("First session", "Later session")
SWITCH_SESSIONS_JS = """
([first, later]) => {  // mute the nodes in the first-session group, unmute those in the later one
  const group = (title) => window.app.graph._groups.find((g) => g.title.startsWith(title));
  const inside = (g, node) => {
    const [x, y, w, h] = g._bounding, cx = node.pos[0] + node.size[0] / 2, cy = node.pos[1] + node.size[1] / 2;
    return cx > x && cx < x + w && cy > y && cy < y + h;
  };
  const switched = {muted: [], unmuted: []};
  for (const node of window.app.graph._nodes) {
    if (inside(group(first), node)) { node.mode = 2; switched.muted.push(node.type); }
    if (inside(group(later), node)) { node.mode = 0; switched.unmuted.push(node.type); }
  }
  return switched;
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
    folders = {name: workdir / "models" / name for name in (
        "checkpoints", "controlnet", "loras", "animatediff_models", "animatediff_motion_lora")}
    for folder in folders.values():
        folder.mkdir(parents=True)
    (folders["checkpoints"] / CHECKPOINT).write_bytes(b"listed only: swapped for the tiny test model")
    (folders["controlnet"] / CONTROLNET).write_bytes(b"listed only: swapped for the tiny test ControlNet")
    write_tiny_lora(folders["loras"] / STYLE_LORA)
    motion = seeded_motion_module(tiny_unet(**MOTION_CHECKPOINT).model.diffusion_model, "v2", seed=0)
    save_atomically(folders["animatediff_models"] / MOTION_MODULE, motion, {})
    server = make_server(workdir, folders)
    server.input_dir.mkdir(parents=True)
    write_source_video(server.input_dir / SOURCE_VIDEO)
    for clip in (DEMO_CLIP, DEMO_MOTION_CLIP):
        shutil.copyfile(CLIPS_FOLDER / clip, server.input_dir / clip)
    write_tuned_weights(server.tuned_weights_dir / TUNED_WEIGHTS)
    server.start()
    yield server
    server.stop()


def test_there_are_eight_workflows():
    assert len(WORKFLOWS) == 8


def test_template_browser_lists_the_workflows(server):
    templates = server.get("/workflow_templates")
    listed = next(names for pack, names in templates.items() if "tune-a-video" in pack)
    assert sorted(listed) == sorted(path.stem for path in WORKFLOWS)


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_layout_is_tidy(path):
    """No node (title bar included) overlaps another, groups do not overlap, and every working node is in one."""
    workflow = json.loads(path.read_text())

    def rect(node):
        title = 0 if node["type"] == "Reroute" else 30
        return node["pos"][0], node["pos"][1] - title, node["size"][0], node["size"][1] + title

    def overlap(a, b):
        return a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]

    nodes, groups = workflow["nodes"], workflow["groups"]
    clashes = [(a["id"], b["id"]) for i, a in enumerate(nodes) for b in nodes[i + 1:] if overlap(rect(a), rect(b))]
    assert clashes == [], clashes
    assert not [(a["title"], b["title"]) for i, a in enumerate(groups) for b in groups[i + 1:]
                if overlap(a["bounding"], b["bounding"])]
    for node in nodes:
        if node["type"] not in ("Note", "Reroute"):
            x, y, w, h = rect(node)
            inside = [g["title"] for g in groups if g["bounding"][0] <= x and x + w <= sum(g["bounding"][::2])
                      and g["bounding"][1] <= y and y + h <= sum(g["bounding"][1::2])]
            assert len(inside) == 1, (node["id"], node["type"], inside)


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
        close_template_dialog(page)
        screenshot_whole_graph(page, ARTIFACTS / f"{path.stem}.png")
        as_saved = page.evaluate(QUEUE_PROMPT_JS, {})
        prompt = page.evaluate(QUEUE_PROMPT_JS, SHORT_SETTINGS)
    object_info = server.get("/object_info")
    assert workflow_to_prompt(workflow, object_info) == api_inputs_only(as_saved, object_info), (
        "UI -> API conversion differs from the frontend's")
    muted = {str(n["id"]) for n in workflow["nodes"] if n.get("mode") == 2}
    assert not muted & set(as_saved), "muted nodes were queued"
    entry = server.run_prompt(swap_loaders(prompt), timeout=600)
    assert entry["status"]["status_str"] == "success", entry["status"]
    saved = list((server.output_dir / "tuneavideo").glob("*.mp4"))
    assert saved, "no edited video was written"
    if path.stem == "tuneavideo_interpolate_frames":
        count = SHORT_SETTINGS["TAV_SampleFrames"]["count"]
        interpolated = next((server.output_dir / "tuneavideo").glob("interpolated*.mp4"))
        assert video_frame_count(interpolated) == 2 * count - 1, "factor 1 puts one new frame in every gap"
    if path.stem == "tuneavideo_motion_module_edit":
        lora = server.workdir / "models" / "animatediff_motion_lora" / f"{MOTION_LORA_NAME}.safetensors"
        assert lora.is_file(), "the tuned motion LoRA was not saved where AnimateDiff-Evolved reads it"


def test_tune_once_later_session_runs(server):
    """The next session of tune once / edit many: first session muted, later one unmuted, as its note says."""
    workflow = json.loads((REPO / "example_workflows" / "tuneavideo_tune_once_edit_many.json").read_text())
    with comfy_page(server.url) as page:
        page.evaluate("async (workflow) => { await window.app.loadGraphData(workflow); }", workflow)
        switched = page.evaluate(SWITCH_SESSIONS_JS, list(SESSIONS))
        prompt = page.evaluate(QUEUE_PROMPT_JS, SHORT_SETTINGS)
        switched_workflow = json.loads(page.evaluate("() => JSON.stringify(window.app.graph.serialize())"))
    assert {"TAV_OneShotTune", "TAV_SaveTunedWeights"} <= set(switched["muted"]), switched
    assert "TAV_LoadTunedWeights" in switched["unmuted"], switched
    queued = {node["class_type"] for node in prompt.values()}
    assert "TAV_LoadTunedWeights" in queued and not queued & {"TAV_OneShotTune", "TAV_SaveTunedWeights"}, queued
    object_info = server.get("/object_info")
    assert workflow_to_prompt(switched_workflow, object_info) == api_inputs_only(prompt, object_info)
    entry = server.run_prompt(swap_loaders(prompt), timeout=600)  # loads the fixture's my_clip.safetensors
    assert entry["status"]["status_str"] == "success", entry["status"]
    assert list((server.output_dir / "tuneavideo").glob("edit_later*.mp4")), "the later edit was not written"


def video_frame_count(path: Path) -> int:
    capture = cv2.VideoCapture(str(path))
    count = 0
    while capture.read()[0]:
        count += 1
    capture.release()
    return count


def close_template_dialog(page) -> None:
    """The template browser a first start opens (sooner or later) over the graph; Escape does not close it."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    close = page.locator('[role="dialog"] button:has(i.pi-times)').first
    try:
        close.wait_for(timeout=5000)
    except PlaywrightTimeout:
        return  # it did not open
    close.click()
    page.locator('[role="dialog"]').first.wait_for(state="hidden", timeout=5000)


def screenshot_whole_graph(page, path: Path) -> None:
    """What a user sees of the whole workflow, at a zoom where widget text is drawn (the minimap, which would
    cover its bottom right, hidden)."""
    page.evaluate("async () => { await window.app.extensionManager.setting.set('Comfy.Minimap.Visible', false); }")
    x0, y0, x1, y1 = page.evaluate(GRAPH_EXTENT_JS)
    page.set_viewport_size({"width": int((x1 - x0) * SCALE) + MARGINS["left"] + MARGINS["right"],
                            "height": int((y1 - y0) * SCALE) + MARGINS["top"] + MARGINS["bottom"]})
    offset = [MARGINS["left"] / SCALE - x0, MARGINS["top"] / SCALE - y0]
    page.evaluate("([scale, offset]) => { window.app.canvas.ds.scale = scale; window.app.canvas.ds.offset = offset; "
                  "window.app.canvas.setDirty(true, true); }", [SCALE, offset])
    page.wait_for_timeout(500)
    path.parent.mkdir(exist_ok=True)
    page.screenshot(path=str(path))


def api_inputs_only(prompt: dict, object_info: dict) -> dict:
    """The frontend's prompt without its frontend-only extras: titles and preview widgets no node reads."""
    prompt = copy.deepcopy(prompt)
    for node in prompt.values():
        node.pop("_meta", None)
        schema = object_info[node["class_type"]]["input"]
        known = {**schema.get("required", {}), **schema.get("optional", {})}
        node["inputs"] = {name: value for name, value in node["inputs"].items() if name in known}
    return prompt


def swap_loaders(prompt: dict) -> dict:
    motion = any(node["class_type"] == "TAV_LoadMotionModule" for node in prompt.values())
    for node in prompt.values():
        if node["class_type"] in SWAPS:
            node["class_type"], node["inputs"] = SWAPS[node["class_type"]]
            if motion and node["class_type"] == "TAVTest_TinyModelLoader":
                node["inputs"] = dict(MOTION_CHECKPOINT)
    return prompt
