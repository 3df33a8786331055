#!/usr/bin/env bash
# The whole GPU measurement in one call on the lent machine (prepared by tools/prepare_gpu_run.sh):
# install the carried wheels, check CUDA and the host, then measure; every table lands in $OUT.
#   run(command="bash benchmarks/gpu_run.sh", carry=[".gpu"])          # everything
#   run(command="bash benchmarks/gpu_run.sh sd15_24", carry=[".gpu"])  # one part, if a call's 10 minutes are short
# Parts: sd15_24 (SD1.5, 24 frames at 512, beside the reference), sd15_8 (8 frames at 512 and 768), sdxl.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${OUT:-$ROOT/gpu-results}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 COMFYUI_PATH="$ROOT/.gpu/ComfyUI"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site "$ROOT"/.gpu/wheels/*.whl \
  || exit 1
export PYTHONPATH=/tmp/site
if [ -d "$ROOT/.gpu/Tune-A-Video" ]; then
  mkdir -p "$ROOT/.reference"
  rm -rf "$ROOT/.reference/site" "$ROOT/.reference/Tune-A-Video"
  cp -r "$ROOT/.gpu/Tune-A-Video" "$ROOT/.reference/Tune-A-Video"
  python3 -m pip install -q --no-index --no-deps --no-compile --target "$ROOT/.reference/site" \
    "$ROOT"/.gpu/reference-wheels/*.whl && touch "$ROOT/.reference/site/.done"
  REFERENCE=(--reference)
else
  REFERENCE=()
fi
{
  date -u; git -C "$ROOT" rev-parse HEAD 2>/dev/null || true
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available())"
} 2>&1 | tee "$OUT/device.txt"
bench() { echo "\$ python3 benchmarks/tune_benchmark.py $*"; python3 "$ROOT/benchmarks/tune_benchmark.py" "$@"; }
PART="${1:-all}"
{
  case "$PART" in all|sd15_24)
    bench --unet sd15 --frames 24 --size 512 --steps 30 --edit-steps 50 --repeats 3 --gpu "${REFERENCE[@]}";; esac
  case "$PART" in all|sd15_8)
    bench --unet sd15 --frames 8 --size 512 768 --steps 20 --edit-steps 50 --repeats 3 --gpu;; esac
  case "$PART" in all|sdxl)
    bench --unet sdxl --frames 8 --size 1024 --steps 10 --edit-steps 0 --gpu;; esac
} 2>&1 | tee "$OUT/tables-$PART.txt"
