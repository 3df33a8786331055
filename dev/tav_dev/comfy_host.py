"""Put the real ComfyUI host prepared by scripts/dev_env.sh on sys.path (CPU unless asked) and import the pack."""

import importlib.util
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACK_MODULE = "comfyui_tune_a_video"


def comfyui_path() -> Path:
    """COMFYUI_PATH wins; otherwise the host scripts/dev_env.sh recorded."""
    if os.environ.get("COMFYUI_PATH"):
        return Path(os.environ["COMFYUI_PATH"]).resolve()
    recorded = REPO / os.environ.get("TAV_VENV", ".venv") / ".tav-comfyui-path"
    if recorded.exists():
        return Path(recorded.read_text().strip())
    return REPO / ".comfyui" / "ComfyUI"


def setup_host(cpu: bool = True, nodes: bool = True):
    """Make `comfy` importable with the right device settings, then import the pack as a package.

    nodes=False registers the package without running its __init__ (no nodes, so no comfy_api and its
    video stack): enough for tav_core and comfy_glue, e.g. for benchmarks on a GPU machine's bare image."""
    comfyui = comfyui_path()
    if not (comfyui / "main.py").exists():
        raise RuntimeError(f"no ComfyUI host at {comfyui}: run scripts/dev_env.sh (or scripts/test.sh) first")
    if str(comfyui) not in sys.path:
        sys.path.insert(0, str(comfyui))
    import comfy.cli_args

    comfy.cli_args.args.cpu = cpu  # must precede comfy.model_management
    comfy.cli_args.args.disable_api_nodes = True
    if PACK_MODULE in sys.modules:
        return sys.modules[PACK_MODULE]
    spec = importlib.util.spec_from_file_location(
        PACK_MODULE, REPO / "__init__.py", submodule_search_locations=[str(REPO)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[PACK_MODULE] = module
    if nodes:
        spec.loader.exec_module(module)
    return module


COMFYUI = comfyui_path()
