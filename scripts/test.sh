#!/usr/bin/env bash
# Installs everything the test suite needs (Python packages, Debian's Chromium for the browser test)
# and runs it offline. Used as-is by CI (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null) \
    || echo "warning: could not install chromium; the browser test will be skipped"
fi
python -m pip install -q torch==2.13.0
python -m pip install -q -r requirements-dev.txt
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
python -m pytest -q "$@"
