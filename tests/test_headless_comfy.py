"""The UI -> API workflow conversion's refusals (its agreement with the frontend is checked, workflow by
workflow, in test_example_workflows.py)."""

import json
from pathlib import Path

import pytest
from comfy_server import workflow_to_prompt

DEMO = Path(__file__).resolve().parents[1] / "example_workflows" / "tuneavideo_demo_shapes.json"
OBJECT_INFO = {  # the parts of /object_info the demo's loader and first text encoder need
    "TAV_LoadDemoModel": {"input": {"required": {}}},
    "LoadVideo": {"input": {"required": {"file": [["clip.mp4"], {"video_upload": True}]}}},
    "CLIPTextEncode": {"input": {"required": {"clip": ["CLIP"], "text": ["STRING", {"multiline": True}]}}},
}


def demo_subgraph() -> dict:
    workflow = json.loads(DEMO.read_text())
    keep = {n["id"] for n in workflow["nodes"]
            if n["type"] in ("TAV_LoadDemoModel", "LoadVideo") or n.get("title") == "Source caption"}
    workflow["nodes"] = [n for n in workflow["nodes"] if n["id"] in keep or n["type"] == "Note"]
    workflow["links"] = [link for link in workflow["links"] if link[1] in keep and link[3] in keep]
    return workflow


def test_widgets_and_links_are_mapped():
    prompt = workflow_to_prompt(demo_subgraph(), OBJECT_INFO)
    by_type = {node["class_type"]: node["inputs"] for node in prompt.values()}
    assert by_type["LoadVideo"] == {"file": "shapes_demo_arc.mp4"}
    assert by_type["CLIPTextEncode"]["text"] == "a red circle on a blue background"
    loader = next(key for key, node in prompt.items() if node["class_type"] == "TAV_LoadDemoModel")
    assert by_type["CLIPTextEncode"]["clip"] == [loader, 1]
    assert "Note" not in by_type


def test_bypassed_and_unknown_nodes_are_refused():
    workflow = demo_subgraph()
    workflow["nodes"][0]["mode"] = 4
    with pytest.raises(ValueError, match="bypassed"):
        workflow_to_prompt(workflow, OBJECT_INFO)
    with pytest.raises(ValueError, match="unknown type 'LoadVideo'"):
        workflow_to_prompt(demo_subgraph(), {k: v for k, v in OBJECT_INFO.items() if k != "LoadVideo"})
