#!/usr/bin/env bash
# System packages for CI (run by `bash scripts/setup.sh --system`). Debian/Ubuntu; needs root or sudo.
# Each block installs what one part of the project needs; append new blocks below, keep them idempotent.
set -euo pipefail
if [ "$(id -u)" -eq 0 ]; then SUDO=""; elif command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
  echo "scripts/system_deps.sh: needs root or sudo to apt-get install" >&2; exit 1; fi
APT="$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends"
$SUDO apt-get update -q

# --- lego study (src/lego_inversion/study): PostgreSQL server for the storage tests, headless Chromium + its
# --- WebDriver for the end-to-end browser test (tests/study/test_browser.py, driven by Selenium).
$APT postgresql chromium chromium-driver
