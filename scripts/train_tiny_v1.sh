#!/usr/bin/env bash
# Reproduce models/llada-tiny (the first tiny model, arith and code families): two curriculum stages of LLaDA SFT on the task families (2 CPU cores).
# Stage 1: both families half and half, the schedule of a 1600-step run, stopped after 751 updates.
# Stage 2: from stage 1, three quarters arith and shorter canvases, stopped after 1251 updates.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup_venv.sh
PY=.venv/bin/python
$PY -m vllm_elastic.train --out runs/stage1 --steps 1600 --stop-after 751 --seed 0
mkdir -p models/llada-tiny && cp runs/stage1/train_log.jsonl models/llada-tiny/train_log.jsonl
$PY -m vllm_elastic.train --out models/llada-tiny --init-from runs/stage1 --stage 2 --seed 1 \
    --steps 1800 --stop-after 1251 --lr 1e-3 --warmup 50 --arith-fraction 0.75 --canvas-weights 0.6 0.2 0.2
