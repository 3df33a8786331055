"""The UI -> API workflow conversion: reroutes, muted nodes and refusals (its agreement with the frontend is
checked, workflow by workflow, in test_example_workflows.py), and the server harness's one process per server."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from tav_dev.comfy_server import make_server, workflow_to_prompt

DEMO = Path(__file__).resolve().parents[1] / "example_workflows" / "tuneavideo_demo_shapes.json"
OBJECT_INFO = {  # the parts of /object_info the demo's loader and first text encoder need
    "TAV_LoadDemoModel": {"input": {"required": {}}},
    "LoadVideo": {"input": {"required": {"file": [["clip.mp4"], {"video_upload": True}]}}},
    "CLIPTextEncode": {"input": {"required": {"clip": ["CLIP"], "text": ["STRING", {"multiline": True}]}}},
}


def demo_subgraph() -> dict:
    """The demo's loader, clip and source caption, with the reroutes and notes between and around them."""
    workflow = json.loads(DEMO.read_text())
    keep = {n["id"] for n in workflow["nodes"]
            if n["type"] in ("TAV_LoadDemoModel", "LoadVideo", "Reroute", "Note") or n.get("title") == "Source caption"}
    workflow["nodes"] = [n for n in workflow["nodes"] if n["id"] in keep]
    workflow["links"] = [link for link in workflow["links"] if link[1] in keep and link[3] in keep]
    kept_links = {link[0] for link in workflow["links"]}
    for node in workflow["nodes"]:
        for slot in node.get("inputs", []):
            if slot.get("link") not in kept_links:
                slot["link"] = None
    return workflow


def node(node_id: int, node_type: str, inputs: list[int | None] = (), widgets: list | None = None, mode: int = 0):
    """A UI-format node whose inputs (in order) take the links given (None: not connected)."""
    return {"id": node_id, "type": node_type, "mode": mode, "widgets_values": widgets or [],
            "inputs": [{"name": "clip" if node_type == "CLIPTextEncode" else "", "type": "*", "link": link}
                       for link in inputs]}


def test_widgets_and_links_are_mapped():
    prompt = workflow_to_prompt(demo_subgraph(), OBJECT_INFO)
    by_type = {node["class_type"]: node["inputs"] for node in prompt.values()}
    assert by_type["LoadVideo"] == {"file": "shapes_demo_arc.mp4"}
    assert by_type["CLIPTextEncode"]["text"] == "a red circle on a blue background"
    loader = next(key for key, node in prompt.items() if node["class_type"] == "TAV_LoadDemoModel")
    assert by_type["CLIPTextEncode"]["clip"] == [loader, 1]  # through the demo's CLIP reroutes
    assert "Note" not in by_type and "Reroute" not in by_type


def test_reroutes_are_followed_and_left_out():
    workflow = {
        "nodes": [node(1, "TAV_LoadDemoModel"), node(2, "Reroute", [10]), node(3, "Reroute", [11]),
                  node(4, "CLIPTextEncode", [12], ["a red circle"]), node(5, "Reroute", [None]),
                  node(6, "CLIPTextEncode", [13], ["nothing behind the reroute"])],
        "links": [[10, 1, 1, 2, 0, "CLIP"], [11, 2, 0, 3, 0, "CLIP"], [12, 3, 0, 4, 0, "CLIP"],
                  [13, 5, 0, 6, 0, "*"]],
    }
    assert workflow_to_prompt(workflow, OBJECT_INFO) == {
        "1": {"class_type": "TAV_LoadDemoModel", "inputs": {}},
        "4": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red circle", "clip": ["1", 1]}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "nothing behind the reroute"}},
    }


def test_muted_nodes_and_the_inputs_linked_to_them_are_left_out():
    workflow = {
        "nodes": [node(1, "TAV_LoadDemoModel", mode=2), node(2, "TAV_LoadDemoModel"),
                  node(3, "CLIPTextEncode", [10], ["from the muted loader"]),
                  node(4, "CLIPTextEncode", [11], ["muted encoder"], mode=2),
                  node(5, "Reroute", [12]), node(6, "CLIPTextEncode", [13], ["through a reroute"]),
                  node(7, "SomeoneElsesNode", mode=2)],  # muted: not even looked up
        "links": [[10, 1, 1, 3, 0, "CLIP"], [11, 2, 1, 4, 0, "CLIP"], [12, 1, 1, 5, 0, "CLIP"],
                  [13, 5, 0, 6, 0, "CLIP"]],
    }
    assert workflow_to_prompt(workflow, OBJECT_INFO) == {
        "2": {"class_type": "TAV_LoadDemoModel", "inputs": {}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "from the muted loader"}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "through a reroute"}},
    }


def test_bypassed_and_unknown_nodes_are_refused():
    workflow = demo_subgraph()
    next(n for n in workflow["nodes"] if n["type"] == "LoadVideo")["mode"] = 4
    with pytest.raises(ValueError, match="bypassed"):
        workflow_to_prompt(workflow, OBJECT_INFO)
    with pytest.raises(ValueError, match="unknown type 'LoadVideo'"):
        workflow_to_prompt(demo_subgraph(), {k: v for k, v in OBJECT_INFO.items() if k != "LoadVideo"})


def test_a_running_server_is_not_started_twice(tmp_path):
    """A second start (e.g. `with server.start():`) would launch a second main.py and leave the first one running
    past stop(), for the rest of the suite: it is refused, and stop() ends the one process there is."""
    server = make_server(tmp_path)
    server.process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    running = server.process
    try:
        with pytest.raises(RuntimeError, match="already running"):
            server.start()
        assert server.process is running
    finally:
        server.stop()
    assert running.poll() is not None


def test_a_server_that_does_not_answer_in_time_is_stopped(tmp_path):
    """`with server:` never reaches stop() when start() raises, so start() ends what it launched itself."""
    server = make_server(tmp_path)
    with pytest.raises(TimeoutError, match="did not answer within 0s"):
        server.start(timeout=0)
    assert server.process.poll() is not None
