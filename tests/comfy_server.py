"""The real ComfyUI server of tools/headless_comfy.py, set up for tests: the test-only nodes installed and a
tuned-weights folder of its own."""

import sys
from pathlib import Path

from comfy_host import COMFYUI, REPO

sys.path.insert(0, str(REPO / "tools"))
from headless_comfy import ComfyServer, workflow_to_prompt  # noqa: E402

TEST_NODES = Path(__file__).resolve().parent / "comfy_test_nodes"
__all__ = ["make_server", "workflow_to_prompt"]


def make_server(
    workdir: Path, model_folders: dict[str, Path] | None = None, extra_args: list[str] | None = None
) -> ComfyServer:
    """A not yet started server whose tuned weights live in workdir/tuneavideo."""
    folders = {"custom_nodes": TEST_NODES, "tuneavideo": workdir / "tuneavideo", **(model_folders or {})}
    server = ComfyServer(COMFYUI, workdir, folders, extra_args=extra_args)
    server.tuned_weights_dir = workdir / "tuneavideo"
    return server
