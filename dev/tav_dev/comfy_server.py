"""The real ComfyUI server of headless_comfy, set up for tests: the test-only nodes installed and a tuned-weights
folder of its own."""

from pathlib import Path

from tav_dev.comfy_host import COMFYUI, REPO
from tav_dev.headless_comfy import ComfyServer, workflow_to_prompt

TEST_NODES = REPO / "tests" / "comfy_test_nodes"
__all__ = ["make_server", "workflow_to_prompt"]


def make_server(
    workdir: Path, model_folders: dict[str, Path] | None = None, extra_args: list[str] | None = None
) -> ComfyServer:
    """A not yet started server whose tuned weights live in workdir/tuneavideo."""
    folders = {"custom_nodes": TEST_NODES, "tuneavideo": workdir / "tuneavideo", **(model_folders or {})}
    server = ComfyServer(COMFYUI, workdir, folders, extra_args=extra_args)
    server.tuned_weights_dir = workdir / "tuneavideo"
    return server
