#!/usr/bin/env bash
# Gather, into .gpu/ (ignored by git), everything benchmarks/gpu_run.sh needs on the lent GPU machine, which
# has no network and an image with CUDA torch (Python 3.12) but no ComfyUI:
#   .gpu/ComfyUI            this checkout's ComfyUI host without tests and tokenizer data (about 6 MB)
#   .gpu/wheels/            ComfyUI requirements missing from that image (pure Python)
#   .gpu/reference-wheels/  the reference's diffusers 0.11.1 era packages (see scripts/reference_env.sh)
#   .gpu/Tune-A-Video/      the reference's tuneavideo/ package (REFERENCE_SOURCE: a checkout of it)
# Then one device call per part:  run(command="bash benchmarks/gpu_run.sh tune24", carry=[".gpu"])
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="$ROOT/${TAV_VENV:-.venv}/bin/python"
COMFY="$(cat "$ROOT/${TAV_VENV:-.venv}/.tav-comfyui-path")"
DEST="$ROOT/.gpu"
rm -rf "$DEST" && mkdir -p "$DEST"
"$PY" - "$COMFY" "$DEST/ComfyUI" <<'PYEOF'
import shutil, sys
from pathlib import Path
source = Path(sys.argv[1])
skip = {"tests", "tests-unit", "custom_nodes", "__pycache__", "comfy_api_nodes", "output", "input", "user", ".git"}
def ignore(folder, names):  # tokenizer data folders of the text encoders are not needed to benchmark UNets
    data = Path(folder) == source / "comfy" / "text_encoders"
    return [n for n in names if n in skip or (data and (Path(folder) / n).is_dir())]
shutil.copytree(source, sys.argv[2], ignore=ignore)
(Path(sys.argv[2]) / "custom_nodes").mkdir()
PYEOF
download() {  # wheels for the device's CPython 3.12 on x86-64 Linux
  "$PY" -m pip download -qq --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform any -d "$1" "${@:2}"
}
download "$DEST/wheels" torchsde==0.2.6 trampoline==0.1.2
download "$DEST/reference-wheels" diffusers==0.11.1 huggingface_hub==0.25.2 transformers==4.46.3 \
  tokenizers==0.20.3 accelerate==1.2.1
if [ -n "${REFERENCE_SOURCE:-}" ]; then
  mkdir -p "$DEST/Tune-A-Video"
  git -C "$REFERENCE_SOURCE" archive HEAD tuneavideo | tar -x -C "$DEST/Tune-A-Video"
else
  echo "REFERENCE_SOURCE unset: the GPU run will skip the reference side-by-side" >&2
fi
du -sh "$DEST"
