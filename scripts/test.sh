#!/usr/bin/env bash
# The whole test suite, from nothing: builds (or reuses) the environment, then runs pytest.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -k inflate`.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/dev_env.sh"
cd "$ROOT"
.venv/bin/ruff check .
exec .venv/bin/python -m pytest "$@"
