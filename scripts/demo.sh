#!/usr/bin/env bash
# The main demo, from nothing: builds (or reuses) the environment, then edits a bundled shapes-world clip
# with the embedded demo model through a real, headless ComfyUI (tools/run_demo.py says what it does).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TAV_SKIP_BROWSER=1 bash "$ROOT/scripts/dev_env.sh"
exec "$ROOT/${TAV_VENV:-.venv}/bin/python" "$ROOT/tools/run_demo.py" "$@"
