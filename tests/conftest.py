"""Test setup: a real ComfyUI host on sys.path (CPU mode) and the pack imported as a package."""

import importlib.util
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACK_MODULE = "comfyui_tune_a_video"


def comfyui_path() -> Path:
    """The host scripts/dev_env.sh prepared (COMFYUI_PATH wins)."""
    if os.environ.get("COMFYUI_PATH"):
        return Path(os.environ["COMFYUI_PATH"]).resolve()
    recorded = REPO / ".venv" / ".tav-comfyui-path"
    if recorded.exists():
        return Path(recorded.read_text().strip())
    return REPO / ".comfyui" / "ComfyUI"


COMFYUI = comfyui_path()
if not (COMFYUI / "main.py").exists():
    raise RuntimeError(f"no ComfyUI host at {COMFYUI}: run scripts/dev_env.sh (or scripts/test.sh) first")
sys.path.insert(0, str(COMFYUI))

import comfy.cli_args  # noqa: E402

comfy.cli_args.args.cpu = True  # must precede comfy.model_management
comfy.cli_args.args.disable_api_nodes = True

sys.path.insert(0, str(Path(__file__).resolve().parent))


def _import_pack():
    if PACK_MODULE in sys.modules:
        return sys.modules[PACK_MODULE]
    spec = importlib.util.spec_from_file_location(
        PACK_MODULE, REPO / "__init__.py", submodule_search_locations=[str(REPO)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[PACK_MODULE] = module
    spec.loader.exec_module(module)
    return module


pack = _import_pack()
