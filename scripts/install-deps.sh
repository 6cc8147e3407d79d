#!/usr/bin/env bash
# Installs the Debian 12 packages Shoal needs to build, run and test, if any
# are missing, plus any packages named as arguments (benchmarks ask for their
# peers, e.g. nginx-light). Runs apt-get as root (directly, or through sudo
# when present). mesa-vulkan-drivers is lavapipe, a Vulkan device on the CPU
# that the hardware-frame tests of the GPU path run on (transcode/ffmpeg).
set -euo pipefail

packages=(ffmpeg redis-server pkg-config chromium nodejs
  libavcodec-dev libavformat-dev libavfilter-dev libavdevice-dev
  libswscale-dev libswresample-dev libavutil-dev
  gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good
  gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly gstreamer1.0-libav
  mesa-vulkan-drivers "$@")

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if ! command -v go >/dev/null 2>&1; then
  echo "install-deps: Go is not on PATH (looked in PATH and /usr/local/go/bin); install Go 1.26 first" >&2
  exit 1
fi

# The Redocly CLI lints the OpenAPI spec in the tests (player-api
# TestOpenAPILint); it needs Node.js 20.19 or later and npm, and skips
# where they are missing.
install_redocly() {
  local dir="${XDG_CACHE_HOME:-$HOME/.cache}/shoal/redocly-2.77.0"
  [ -x "$dir/node_modules/.bin/redocly" ] && return 0
  command -v npm >/dev/null 2>&1 || return 0
  node -e 'const [a,b]=process.versions.node.split(".").map(Number); process.exit(a>20||(a===20&&b>=19)?0:1)' 2>/dev/null || return 0
  npm install --prefix "$dir" --no-audit --no-fund --loglevel=error @redocly/cli@2.77.0 >/dev/null ||
    echo "install-deps: could not install the Redocly CLI; the OpenAPI lint test will skip" >&2
}

if [ ${#missing[@]} -eq 0 ]; then
  install_redocly
  exit 0
fi

echo "install-deps: installing ${missing[*]}"
sudo=()
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    sudo=(sudo)
  else
    echo "install-deps: not root and no sudo; install these packages: ${missing[*]}" >&2
    exit 1
  fi
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -q
"${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
install_redocly
