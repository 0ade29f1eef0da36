#!/usr/bin/env bash
# Installs Debian's headless-capable Chromium (for the browser tests) if it
# is missing, and prints the path of its binary. Idempotent; installing needs
# root (apt-get). Usage: SAEPIPE_CHROMIUM=$(scripts/chromium.sh)
set -euo pipefail
find_bin() {
  for b in chromium chromium-browser google-chrome; do
    if command -v "$b" >/dev/null 2>&1; then command -v "$b"; return 0; fi
  done
  return 1
}
if ! find_bin >/dev/null; then
  echo "installing chromium from Debian (for the report browser test)" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends chromium >&2
fi
find_bin
