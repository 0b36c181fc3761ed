#!/usr/bin/env bash
# The runs behind BENCHMARKS.md (reference engine = the pure-PyTorch core; vLLM engine = the plugin).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
mkdir -p runs/bench
$PY -m vllm_elastic.bench --engine reference --methods llada,fastdllm,elastic --gen-length 256 \
    --num-prompts 32 --concurrency 8 --task arith --threads 1 --json runs/bench/ref-arith-256.json
$PY -m vllm_elastic.bench --engine reference --methods llada,fastdllm,elastic --gen-length 256 \
    --num-prompts 24 --concurrency 8 --task code --threads 1 --json runs/bench/ref-code-256.json
$PY -m vllm_elastic.bench --engine reference --methods llada,fastdllm,elastic --gen-length 1024 \
    --num-prompts 4 --concurrency 4 --task code --threads 1 --json runs/bench/ref-code-1024.json
