#!/usr/bin/env bash
# One command sets everything up:   bash scripts/setup.sh            (add --system for CI's services)
# Installs the CPU build of torch (TORCH_SPEC overrides, e.g. TORCH_SPEC=torch for a CUDA box), the CLIP BPE
# vocabulary (open_clip_torch, without its torchvision dependency), and this package with its extras.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
PIP="$PY -m pip install -q --disable-pip-version-check"
$PIP "${TORCH_SPEC:-torch==2.13.0}"
$PIP --no-deps "open_clip_torch>=2.20"
$PIP -e ".[study,dev]"
# PyPI's torchvision does not import beside the CPU build of torch and breaks transformers' image processors;
# timm without a working torchvision breaks `accelerate launch`. Remove either only when it is broken.
for pkg in torchvision timm; do
  if $PY -m pip show -q "$pkg" >/dev/null 2>&1 && ! $PY -c "import $pkg" >/dev/null 2>&1; then
    echo "setup: removing $pkg, which does not import here"; $PY -m pip uninstall -y -q "$pkg" >/dev/null 2>&1 || true
  fi
done
if [ "${1:-}" = "--system" ] && [ -f scripts/system_deps.sh ]; then bash scripts/system_deps.sh; fi
echo "lego-inversion is set up: try 'lego --help'"
