#!/usr/bin/env bash
# The reference implementation's environment, for benchmarks/tune_benchmark.py --reference (never committed):
#   .reference/Tune-A-Video  showlab/Tune-A-Video's tuneavideo/ package (REFERENCE_SOURCE: a checkout of it)
#   .reference/site          diffusers 0.11.1 with the huggingface_hub (cached_download), transformers,
#                            tokenizers and accelerate of its time, as a --target folder put first on
#                            PYTHONPATH: torch, einops and the rest come from the environment that runs it
#                            (ours here, the image's on a GPU).
# Wheels only; on a machine without network, REFERENCE_WHEELS names a folder of them (pip download here).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-$ROOT/${TAV_VENV:-.venv}/bin/python}"
DEST="$ROOT/.reference"
PINS=("diffusers==0.11.1" "huggingface_hub==0.25.2" "transformers==4.46.3" "tokenizers==0.20.3" "accelerate==1.2.1")
mkdir -p "$DEST"
if [ ! -d "$DEST/Tune-A-Video/tuneavideo" ]; then
  [ -n "${REFERENCE_SOURCE:-}" ] || { echo "set REFERENCE_SOURCE to a checkout of showlab/Tune-A-Video" >&2; exit 1; }
  mkdir -p "$DEST/Tune-A-Video"
  if [ -d "$REFERENCE_SOURCE/.git" ] || git -C "$REFERENCE_SOURCE" rev-parse >/dev/null 2>&1; then
    git -C "$REFERENCE_SOURCE" archive HEAD tuneavideo | tar -x -C "$DEST/Tune-A-Video"
  else
    cp -r "$REFERENCE_SOURCE/tuneavideo" "$DEST/Tune-A-Video/"
  fi
fi
if [ ! -f "$DEST/site/.done" ]; then
  source_args=()
  [ -n "${REFERENCE_WHEELS:-}" ] && source_args=(--no-index --find-links "$REFERENCE_WHEELS")
  rm -rf "$DEST/site"
  "$PY" -m pip install -qq --no-deps --only-binary=:all: --target "$DEST/site" "${source_args[@]}" "${PINS[@]}"
  touch "$DEST/site/.done"
fi
echo "$DEST"
