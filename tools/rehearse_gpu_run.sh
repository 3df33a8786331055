#!/usr/bin/env bash
# Rehearse the GPU run on this CPU machine before spending device time: a Python 3.12 environment holding the
# GPU image's versions of what the benchmark imports (device tool's KINDS.md: torch 2.11.0, transformers
# 5.17.0, numpy 2.5.2, safetensors 0.8.0, huggingface_hub 1.33.0, ...; no PyAV, no xformers), first on PATH
# as `python3`, then `benchmarks/gpu_run.sh smoke` (it runs on the CPU where there is no CUDA).
#   REFERENCE_SOURCE=<checkout of showlab/Tune-A-Video> bash tools/prepare_gpu_run.sh   # once, builds .gpu/
#   bash tools/rehearse_gpu_run.sh                       # about a minute once the environment exists
# The environment goes to $REHEARSAL_VENV (default /tmp/tav-gpu-rehearsal; several GB: torch with CUDA libs).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${REHEARSAL_VENV:-/tmp/tav-gpu-rehearsal}"
PYTHON312="${PYTHON312:-$(command -v python3.12 || ls /root/.pyenv/versions/3.12*/bin/python3.12 2>/dev/null | head -1)}"
[ -d "$ROOT/.gpu/ComfyUI" ] || { echo "no .gpu/: run tools/prepare_gpu_run.sh first" >&2; exit 2; }
if [ ! -f "$VENV/.done" ]; then
  [ -n "$PYTHON312" ] || { echo "no Python 3.12 found (set PYTHON312)" >&2; exit 2; }
  "$PYTHON312" -m venv "$VENV"
  "$VENV/bin/pip" install -q torch==2.11.0 torchvision==0.26.0 torchaudio==2.11.0 transformers==5.17.0 \
    safetensors==0.8.0 tokenizers==0.23.2 huggingface_hub==1.33.0 accelerate==1.15.0 numpy==2.5.2 \
    sentencepiece einops pillow scipy tqdm psutil pyyaml aiohttp opencv-python-headless regex requests
  touch "$VENV/.done"
fi
# What the device gets: the working tree's tracked and unignored files plus the carried .gpu/, in a fresh folder
# (gpu_run.sh installs the reference into its root's .reference/, which must not replace this checkout's).
WORK="$(mktemp -d)/comfyui-tune-a-video"
mkdir -p "$WORK"
(cd "$ROOT" && git ls-files -co --exclude-standard -z | xargs -0 cp --parents -t "$WORK")
cp -r "$ROOT/.gpu" "$WORK/.gpu"
OUT="${OUT:-$ROOT/gpu-rehearsal}" PATH="$VENV/bin:$PATH" bash "$WORK/benchmarks/gpu_run.sh" smoke
rm -rf "$(dirname "$WORK")"
