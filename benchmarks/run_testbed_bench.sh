#!/usr/bin/env bash
# The test-bed runs behind BENCHMARKS.md §1-§3 on a test-bed model (story, program, listing):
#   1. the reference engine at canvases 256, 512 and 1024: llada, fastdllm (prefix cache), elastic,
#      then fastdllm with the dual cache, on the first N held-out problems of each family;
#   2. elastic's gamma sweep (0.8, 0.9, 0.95, 0.99) at 256 and 512: accuracy against layer-rows;
#   3. the same problems through vLLM and the plugin at concurrency 1 and 16 (canvas 256).
# One JSON file per run under runs/testbed/; `python benchmarks/render.py runs/testbed/*.json`
# prints the tables (a dual-cache or gamma row's speed-up is against the llada row of the same
# family and canvas in ref-*.json). One thread per process (docs/TRAINING.md: shared machines).
#   MODEL=models/llada-testbed N=32 benchmarks/run_testbed_bench.sh
#   MODEL=models/llada-listing FAMILIES=listing N=16 benchmarks/run_testbed_bench.sh   # the long family
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
MODEL=${MODEL:-models/llada-testbed}
N=${N:-32}
FAMILIES=${FAMILIES:-story program listing}
OUT=${OUT:-runs/testbed}
mkdir -p "$OUT"
ref() {  # family canvas name extra-args...
    local family=$1 canvas=$2 name=$3
    shift 3
    $PY -m vllm_elastic.bench --engine reference --model "$MODEL" --gen-length "$canvas" \
        --num-prompts "$N" --concurrency 8 --data "data/${family}_${canvas}.jsonl" --threads 1 \
        --json "$OUT/$name.json" "$@"
}
for canvas in 256 512 1024; do
    for family in $FAMILIES; do
        ref "$family" "$canvas" "ref-$family-$canvas" --methods llada,fastdllm,elastic
        ref "$family" "$canvas" "ref-$family-$canvas-dual" --methods fastdllm --cache dual
    done
done
for canvas in 256 512; do
    for family in $FAMILIES; do
        for gamma in 0.8 0.9 0.95 0.99; do
            ref "$family" "$canvas" "gamma-$family-$canvas-$gamma" --methods elastic --gamma "$gamma"
        done
    done
done
for family in $FAMILIES; do
    VLLM_PLUGINS=elastic VLLM_CPU_KVCACHE_SPACE=1 $PY -m vllm_elastic.bench --engine vllm \
        --model "$MODEL" --methods llada,fastdllm,elastic --gen-length 256 --num-prompts "$N" \
        --concurrency 1,16 --data "data/${family}_256.jsonl" --json "$OUT/vllm-$family-256.json"
done
