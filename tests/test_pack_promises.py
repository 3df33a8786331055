"""Promises the pack makes about itself, checked: tav_core (and the shapes demo kit) import in a Python with no
ComfyUI anywhere, the pack runs on the oldest Python pyproject promises, and every number input of every node
refuses NaN and out-of-range values before the prompt runs."""

import ast
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
from comfy_api.latest import io
from comfyui_tune_a_video.nodes import NODE_CLASSES

REPO = Path(__file__).resolve().parents[1]
HOST_MODULES = ("comfy", "comfy_api", "comfy_extras", "comfy_execution", "folder_paths", "nodes", "server")
HOST_FREE_PACKAGES = ("tav_core", "shapes_demo")

# The pack's folder as a package whose __init__ (which needs ComfyUI) never runs, as ComfyUI's loader would name it.
IMPORT_ALL = """
import importlib, importlib.util, pkgutil, sys
repo, packages = sys.argv[1], sys.argv[2:]
spec = importlib.util.spec_from_file_location("pack", f"{repo}/__init__.py", submodule_search_locations=[repo])
sys.modules["pack"] = importlib.util.module_from_spec(spec)
for package_name in packages:
    package = importlib.import_module(f"pack.{package_name}")
    for module in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"pack.{package_name}.{module.name}")
print(sorted({name.split(".")[0] for name in sys.modules}))
"""


def test_host_free_packages_import_without_comfyui(tmp_path):
    """The layering claim, enforced: a fresh Python with no ComfyUI on its path imports every module of them."""
    result = subprocess.run(
        [sys.executable, "-c", IMPORT_ALL, str(REPO), *HOST_FREE_PACKAGES], cwd=tmp_path, capture_output=True,
        text=True, env={"PATH": "/usr/bin:/bin"}, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    imported = set(ast.literal_eval(result.stdout.strip().splitlines()[-1]))
    assert not imported & set(HOST_MODULES), imported & set(HOST_MODULES)


def test_the_pack_runs_on_the_oldest_python_it_promises():
    oldest = re.search(r'requires-python\s*=\s*">=(\d+\.\d+)"', (REPO / "pyproject.toml").read_text()).group(1)
    pack = [str(REPO / name) for name in ("__init__.py", "install.py", "nodes", "comfy_glue", *HOST_FREE_PACKAGES)]
    vermin = Path(sys.executable).with_name("vermin")
    result = subprocess.run(
        [str(vermin), f"--target={oldest}-", "--violations", "--no-tips", "--eval-annotations", *pack],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr


NUMBER_INPUTS = [
    (node, spec)
    for node in NODE_CLASSES
    for spec in node.define_schema().inputs
    if isinstance(spec, (io.Int.Input, io.Float.Input)) and spec.max is not None and spec.max < 2**31
]


@pytest.mark.parametrize(
    ("node", "spec"), NUMBER_INPUTS, ids=[f"{node.__name__}.{spec.id}" for node, spec in NUMBER_INPUTS]
)
def test_every_number_input_refuses_nan_and_out_of_range_values_when_queued(node, spec):
    """validate_inputs must name the input (ComfyUI then skips its own range check, which lets NaN through)."""
    display = node.define_schema().display_name
    bad_values = [spec.max + 1, spec.min - 1] if spec.min is not None else [spec.max + 1]
    if isinstance(spec, io.Float.Input):
        bad_values += [math.nan, math.inf]
    for value in bad_values:
        message = node.validate_inputs(**{spec.id: value})
        assert isinstance(message, str) and message.startswith(f"{display}: input '{spec.id}': "), (value, message)
    assert node.validate_inputs(**{spec.id: spec.default}) is True


def test_the_recorded_version_is_pyprojects_and_the_registry_fields_are_there():
    import tomllib
    from comfyui_tune_a_video.tav_core.pack_version import PACK_VERSION

    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert PACK_VERSION == pyproject["project"]["version"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", PACK_VERSION)
    assert re.fullmatch(r"[a-z][a-z0-9\-]{0,98}", pyproject["project"]["name"])
    assert pyproject["tool"]["comfy"]["PublisherId"] and pyproject["tool"]["comfy"]["DisplayName"]
    assert pyproject["tool"]["setuptools"]["dynamic"]["dependencies"]["file"] == ["requirements.txt"]
