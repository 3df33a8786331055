"""A real ComfyUI server on 127.0.0.1 in its own base folder, and the UI-workflow -> API-prompt conversion,
for the demo command, the benchmarks and the integration tests."""

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
SEED_NAMES = {"seed", "noise_seed"}  # the frontend adds a control_after_generate widget after these
DYNAMIC_COMBO = "COMFY_DYNAMICCOMBO_V3"  # newer ComfyUI: a combo whose options bring inputs of their own
VIRTUAL_NODES = {"Note", "MarkdownNote", "Reroute"}  # frontend-only: never in the prompt
MUTED = 2  # LiteGraph mode "never": the frontend leaves the node out
MISSING = object()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ComfyServer:
    """`python main.py --cpu` of the given ComfyUI, with input/output/temp/user folders under `workdir`.

    `folders` are extra model-folder paths (name -> path, e.g. "custom_nodes" or "tuneavideo"); `extra_args` go to
    main.py as they are (e.g. ["--cache-lru", "10"])."""

    def __init__(self, comfyui: Path, workdir: Path, folders: dict[str, Path] | None = None, cpu: bool = True,
                 extra_args: list[str] | None = None):
        self.comfyui = comfyui
        self.extra_args = list(extra_args or [])
        self.workdir = workdir
        self.folders = folders or {}
        self.cpu = cpu
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.output_dir = workdir / "output"
        self.input_dir = workdir / "input"
        self.log_path = workdir / "server.log"
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 180) -> "ComfyServer":
        if self.process and self.process.poll() is None:
            # A second main.py would replace self.process, and stop() would never end the first one.
            raise RuntimeError(f"ComfyUI is already running on port {self.port}: use `with server:` or start(), "
                               "not both")
        for name in ("output", "input", "temp", "user"):
            (self.workdir / name).mkdir(parents=True, exist_ok=True)
        command = [
            sys.executable, "main.py", "--listen", "127.0.0.1", "--port", str(self.port), "--disable-api-nodes",
            "--output-directory", str(self.output_dir), "--input-directory", str(self.input_dir),
            "--temp-directory", str(self.workdir / "temp"), "--user-directory", str(self.workdir / "user"),
            "--database-url", "sqlite:///:memory:",
        ] + (["--cpu"] if self.cpu else []) + self.extra_args
        if self.folders:
            extra_paths = self.workdir / "extra_model_paths.yaml"
            lines = [f"  {name}: {path}" for name, path in self.folders.items()]
            extra_paths.write_text("tav_headless:\n" + "\n".join(lines) + "\n  is_default: true\n")
            command += ["--extra-model-paths-config", str(extra_paths)]
        self.process = subprocess.Popen(command, cwd=self.comfyui, stdout=self.log_path.open("w"),
                                        stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with {self.process.returncode}:\n{self.log()}")
            try:
                self.get("/system_stats")
                return self
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.5)
        self.stop()  # a start that fails ends its process: no `with` block or fixture is left to stop it
        raise TimeoutError(f"ComfyUI did not answer within {timeout}s:\n{self.log()}")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()

    def __enter__(self) -> "ComfyServer":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def get(self, path: str):
        with urllib.request.urlopen(self.url + path, timeout=30) as response:
            return json.loads(response.read())

    def post(self, path: str, payload: dict):
        request = urllib.request.Request(
            self.url + path, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())

    def queue(self, prompt: dict) -> str:
        try:
            return self.post("/prompt", {"prompt": prompt})["prompt_id"]
        except urllib.error.HTTPError as error:
            raise RuntimeError(f"ComfyUI refused the prompt: {error.read().decode()}") from error

    def run_prompt(self, prompt: dict, timeout: float = 300) -> dict:
        """Queue an API-format prompt and wait for its /history entry (success or error)."""
        prompt_id = self.queue(prompt)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            history = self.get(f"/history/{prompt_id}").get(prompt_id)
            if history and (history["status"].get("completed") or history["status"].get("status_str") == "error"):
                return history
            time.sleep(0.5)
        raise TimeoutError(f"prompt {prompt_id} did not finish within {timeout}s:\n{self.log()}")

    def output_files(self, history: dict, node: str, kind: str = "images") -> list[Path]:
        """Paths of the files an output node wrote (SaveImage/SaveVideo/SaveAnimatedWEBP)."""
        items = history["outputs"].get(node, {}).get(kind, [])
        folders = {"output": self.output_dir, "temp": self.workdir / "temp", "input": self.input_dir}
        return [folders[item.get("type", "output")] / item.get("subfolder", "") / item["filename"] for item in items]


def history_error(history: dict) -> str | None:
    """The node error message of a failed /history entry, if any."""
    for name, data in history["status"].get("messages", []):
        if name == "execution_error":
            return f"{data['node_type']} ({data['node_id']}): {data['exception_message']}"
    return None


def workflow_to_prompt(workflow: dict, object_info: dict) -> dict:
    """Turn a UI-format workflow (what the frontend saves) into the API prompt the frontend would queue.

    Widget values are matched to the inputs /object_info lists, in order; linked inputs take the link, followed
    through Reroute nodes to the output they carry. As in the frontend, notes and reroutes are left out, and so
    are muted nodes (mode 2, "never") and the inputs linked to them. Subgraphs and bypassed nodes (mode 4) are
    not handled: they are refused."""
    nodes = {node["id"]: node for node in workflow["nodes"]}
    links = {link[0]: link for link in workflow["links"]}
    prompt, linked = {}, []
    for node in workflow["nodes"]:
        if node["type"] in VIRTUAL_NODES or node.get("mode", 0) == MUTED:
            continue
        if node["type"] not in object_info:
            raise ValueError(f"node {node['id']}: unknown type {node['type']!r} (is its pack installed?)")
        if node.get("mode", 0) != 0:
            raise ValueError(f"node {node['id']} ({node['type']}) is bypassed; enable, mute or remove it")
        info = object_info[node["type"]]
        values = iter(node.get("widgets_values") or [])
        inputs = {}
        _map_widgets(_schema_inputs(info["input"], info.get("input_order")), values, inputs)
        for slot in node.get("inputs", []):
            origin = _origin(slot.get("link"), nodes, links)
            if origin is not None:
                inputs[slot["name"]] = [str(origin[1]), origin[2]]
                linked.append((inputs, slot["name"]))
        prompt[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    for inputs, name in linked:  # the frontend drops inputs linked to nodes left out (muted ones)
        if inputs[name][0] not in prompt:
            del inputs[name]
    return prompt


def _origin(link_id: int | None, nodes: dict, links: dict) -> list | None:
    """The link record of the output behind `link_id`, through Reroute nodes; None if nothing is connected."""
    seen = set()
    while link_id is not None:
        if link_id in seen:
            raise ValueError(f"reroutes in a loop at link {link_id}")
        seen.add(link_id)
        link = links[link_id]
        source = nodes[link[1]]
        if source["type"] != "Reroute":
            return link
        link_id = (source.get("inputs") or [{}])[0].get("link")
    return None


def _map_widgets(schema_inputs, values, inputs: dict) -> None:
    """Widget values, in order, onto the inputs they belong to. A newer ComfyUI's dynamic combo counts as one
    widget (its options' own inputs are not expanded: the frontend queues such a combo the same way)."""
    for name, spec in schema_inputs:
        kind, options = spec[0], (spec[1] if len(spec) > 1 else {})
        if not (isinstance(kind, list) or kind in WIDGET_TYPES or kind == DYNAMIC_COMBO):
            continue
        value = next(values, MISSING)
        # A workflow saved by an older ComfyUI lacks the values of inputs added since: their defaults.
        inputs[name] = _default(kind, options) if value is MISSING else value
        if options.get("control_after_generate") or (kind == "INT" and name in SEED_NAMES):
            next(values, None)
        if any(options.get(upload) for upload in ("image_upload", "video_upload", "audio_upload")):
            next(values, None)


def _default(kind, options: dict):
    if "default" in options:
        return options["default"]
    choices = kind if isinstance(kind, list) else [o["key"] if isinstance(o, dict) else o
                                                   for o in options.get("options", [])]
    if choices:
        return choices[0]
    raise ValueError(f"the workflow has no value for an input without a default ({kind}): save it again in the UI")


def _schema_inputs(schema: dict, order: dict | None = None):
    order = order or {group: list(schema.get(group, {})) for group in ("required", "optional")}
    for group in ("required", "optional"):
        for name in order.get(group, []):
            yield name, schema[group][name]
