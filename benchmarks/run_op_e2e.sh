#!/usr/bin/env bash
# The plugin end to end with the compiled elastic_attention op and with its torch twin
# (VLLM_ELASTIC_ATTENTION=torch), same prompts and settings, one after the other (BENCHMARKS §9).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${VENV:-.venv}/bin/python
ARGS=(--engine vllm --methods llada,fastdllm,elastic --gen-length 256 --num-prompts 16 --concurrency 16 --task arith)
"$PY" -m vllm_elastic.bench "${ARGS[@]}" --json runs/bench/op-e2e-kernel.json
VLLM_ELASTIC_ATTENTION=torch "$PY" -m vllm_elastic.bench "${ARGS[@]}" --json runs/bench/op-e2e-torch.json
