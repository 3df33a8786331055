#!/usr/bin/env bash
# The whole test suite, from nothing: builds (or reuses) the environment, then runs pytest.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -k inflate`.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/dev_env.sh"
cd "$ROOT"
VENV="${TAV_VENV:-.venv}"
"$VENV/bin/ruff" check .
exec "$VENV/bin/python" -m pytest tests "$@"   # tests/pytest.ini says why the folder is named
