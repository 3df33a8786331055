#!/usr/bin/env bash
# The GPU measurements on the lent machine (prepared by tools/prepare_gpu_run.sh): install the carried
# wheels, check CUDA and the host, then measure the parts asked for; every table lands in $OUT.
# A device call may run 10 minutes and a session has 15 minutes of device time (start-up included), so
# run the parts in this order, one call each (smoke with tune24), until the time is spent:
#   run(command="bash benchmarks/gpu_run.sh smoke tune24", carry=[".gpu"])
#   run(command="bash benchmarks/gpu_run.sh compile24", carry=[".gpu"]), then ablate24, pseudo3d24, sizes, sdxl
# Each setting's numbers are printed as soon as they exist ("measured ..."), so a call cut off at its limit
# still brings back what it measured.
# Parts (SD1.5's UNet unless said; each row a tuning setting, see benchmarks/tune_benchmark.py):
#   smoke      a minute on sd15_mini (SD1.5's blocks at a tenth of the width), with compile and the reference:
#              checks the whole chain before the long parts; on a machine without CUDA it runs on the CPU,
#              which rehearses the run with the device image's packages
#   tune24     24 frames at 512: checkpointing blocks / transformers / off, inversion + sampling, the reference
#   compile24  24 frames at 512: blocks and off with regional torch.compile (compile time in "setup s")
#   ablate24   24 frames at 512: channels-last, a loss read-back every step, fp32, fp16, unfused attention
#   pseudo3d24 24 frames at 512: blocks against blocks+pseudo3d (Make-A-Video's temporal convolutions)
#   sizes      8 frames at 512 and 768
#   sdxl       SDXL's UNet, 8 frames at 1024
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${OUT:-$ROOT/gpu-results}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 COMFYUI_PATH="$ROOT/.gpu/ComfyUI"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site "$ROOT"/.gpu/wheels/*.whl \
  || exit 1
export PYTHONPATH="/tmp/site:$ROOT/dev"   # the wheels, and the development helpers (tav_dev)
REFERENCE=()
if [ -d "$ROOT/.gpu/Tune-A-Video" ] && [[ " $* " =~ " "(tune24|smoke)" " ]]; then
  mkdir -p "$ROOT/.reference"
  rm -rf "$ROOT/.reference/site" "$ROOT/.reference/Tune-A-Video"
  cp -r "$ROOT/.gpu/Tune-A-Video" "$ROOT/.reference/Tune-A-Video"
  python3 -m pip install -q --no-index --no-deps --no-compile --target "$ROOT/.reference/site" \
    "$ROOT"/.gpu/reference-wheels/*.whl && touch "$ROOT/.reference/site/.done" && REFERENCE=(--reference)
fi
{
  date -u; git -C "$ROOT" rev-parse HEAD 2>/dev/null || true
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available())"
} 2>&1 | tee -a "$OUT/device.txt"
bench() { echo "\$ python3 benchmarks/tune_benchmark.py $*"; python3 "$ROOT/benchmarks/tune_benchmark.py" "$@"; echo; }
SD15_24=(--unet sd15 --frames 24 --size 512 --steps 50 --gpu)
GPU=(--gpu)
python3 -c "import torch, sys; sys.exit(not torch.cuda.is_available())" || GPU=()
[ $# -gt 0 ] || { echo "name the parts to run: smoke tune24 compile24 ablate24 pseudo3d24 sizes sdxl" >&2; exit 2; }
for part in "$@"; do
  case "$part" in
    smoke) bench --unet sd15_mini --frames 8 --size 64 --steps 12 --settings blocks blocks+compile off --edit-steps 10 \
      --repeats 1 "${GPU[@]}" "${REFERENCE[@]}";;
    tune24) bench "${SD15_24[@]}" --settings blocks transformers off --edit-steps 50 --repeats 3 "${REFERENCE[@]}";;
    compile24) bench "${SD15_24[@]}" --settings blocks+compile off+compile --edit-steps 0;;
    ablate24) bench "${SD15_24[@]}" --settings blocks blocks+channels_last blocks+sync blocks+fp32 blocks+fp16 \
      blocks+naive_attention off+channels_last --edit-steps 0;;
    pseudo3d24) bench "${SD15_24[@]}" --settings blocks blocks+pseudo3d --edit-steps 0;;
    sizes) bench --unet sd15 --frames 8 --size 512 768 --steps 50 --settings blocks off --edit-steps 50 --repeats 3 \
      --gpu;;
    sdxl) bench --unet sdxl --frames 8 --size 1024 --steps 50 --settings blocks off --edit-steps 0 --gpu;;
    *) echo "unknown part $part" >&2; exit 2;;
  esac 2>&1 | tee "$OUT/tables-$part.txt"
done
