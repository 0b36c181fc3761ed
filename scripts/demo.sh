#!/usr/bin/env bash
# The main job: the bundled tiny LLaDA through vLLM and the plugin (offline LLM.generate), once per
# method (llada, fastdllm, elastic): each answer, whether it is right, tokens/s, NFE, speed-up.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup_venv.sh
VLLM_LOGGING_LEVEL=${VLLM_LOGGING_LEVEL:-WARNING} VLLM_PLUGINS=elastic exec .venv/bin/python examples/demo.py "$@"
