"""A real ComfyUI server on 127.0.0.1 for integration tests, isolated in a temporary base folder."""

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from comfy_host import COMFYUI

TEST_NODES = Path(__file__).resolve().parent / "comfy_test_nodes"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ComfyServer:
    def __init__(self, workdir: Path, model_folders: dict[str, Path] | None = None) -> None:
        self.workdir = workdir
        self.model_folders = model_folders or {}
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.output_dir = workdir / "output"
        self.input_dir = workdir / "input"
        self.tuned_weights_dir = workdir / "tuneavideo"
        self.log_path = workdir / "server.log"
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 180) -> "ComfyServer":
        for name in ("output", "input", "temp", "user"):
            (self.workdir / name).mkdir(parents=True, exist_ok=True)
        extra_paths = self.workdir / "extra_model_paths.yaml"
        folders = {"custom_nodes": TEST_NODES, "tuneavideo": self.tuned_weights_dir, **self.model_folders}
        lines = [f"  {name}: {path}" for name, path in folders.items()]
        extra_paths.write_text("tav_tests:\n" + "\n".join(lines) + "\n  is_default: true\n")
        command = [
            sys.executable, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(self.port),
            "--disable-api-nodes", "--extra-model-paths-config", str(extra_paths),
            "--output-directory", str(self.output_dir), "--input-directory", str(self.input_dir),
            "--temp-directory", str(self.workdir / "temp"), "--user-directory", str(self.workdir / "user"),
            "--database-url", "sqlite:///:memory:",
        ]
        self.process = subprocess.Popen(
            command, cwd=COMFYUI, stdout=self.log_path.open("w"), stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with {self.process.returncode}:\n{self.log()}")
            try:
                self.get("/system_stats")
                return self
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.5)
        raise TimeoutError(f"ComfyUI did not answer within {timeout}s:\n{self.log()}")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()

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

    def run_prompt(self, prompt: dict, timeout: float = 300) -> dict:
        """Queue an API-format prompt and wait for its /history entry."""
        try:
            prompt_id = self.post("/prompt", {"prompt": prompt})["prompt_id"]
        except urllib.error.HTTPError as error:
            raise AssertionError(f"prompt refused: {error.read().decode()}") from error
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            history = self.get(f"/history/{prompt_id}")
            if prompt_id in history and history[prompt_id].get("status", {}).get("completed") is not None:
                return history[prompt_id]
            if prompt_id in history and history[prompt_id].get("status", {}).get("status_str") == "error":
                return history[prompt_id]
            time.sleep(0.5)
        raise TimeoutError(f"prompt {prompt_id} did not finish within {timeout}s:\n{self.log()}")
