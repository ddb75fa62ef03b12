#!/usr/bin/env bash
# Installs PyTorch's CPU wheel into .tools/torch (project-local; nothing else on the machine
# changes) for the PyTorch peers of `npm run bench -- --torch`. Idempotent. Uses the CPU index
# (no CUDA libraries); where it cannot be reached, PyPI's wheel (large: it brings CUDA's).
set -euo pipefail
cd "$(dirname "$0")/../.."
TARGET=.tools/torch
PY=${PYTHON:-python3}
if PYTHONPATH=$TARGET "$PY" -c 'import torch' 2>/dev/null; then
  echo "torch already in $TARGET"
  exit 0
fi
if ! "$PY" -m pip install --quiet --retries 0 --timeout 20 --target "$TARGET" torch --index-url https://download.pytorch.org/whl/cpu; then
  echo "PyTorch's CPU index cannot be reached: installing PyPI's torch wheel (with its CUDA dependencies, a few GB)" >&2
  "$PY" -m pip install --quiet --target "$TARGET" torch
fi
PYTHONPATH=$TARGET "$PY" -c 'import torch; print("installed torch", torch.__version__, "into", "'$TARGET'")'
