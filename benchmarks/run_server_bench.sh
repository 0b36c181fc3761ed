#!/usr/bin/env bash
# The load run behind BENCHMARKS.md §7: start `vllm-elastic serve` on the tiny model, drive it with the
# bench's `--engine server` (1, 4, 16, 32 concurrent streaming openai clients per method), then score it
# with lm-eval-harness on the local arith task, then stop it. Everything goes to runs/server/.
#   VENV=.venv PORT=8000 benchmarks/run_server_bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PORT=${PORT:-8000}
URL=http://127.0.0.1:$PORT
OUT=runs/server
mkdir -p "$OUT"
export VLLM_PLUGINS=elastic VLLM_CPU_KVCACHE_SPACE=1

"$VENV/bin/vllm-elastic" serve models/llada-tiny --host 127.0.0.1 --port "$PORT" --dtype float32 \
    --max-model-len 512 --max-num-seqs 32 > "$OUT/server.log" 2>&1 &
SERVER=$!
trap 'kill "$SERVER" 2>/dev/null; wait "$SERVER" 2>/dev/null || true' EXIT
for _ in $(seq 1 300); do  # engine start: about a minute on 2 cores
    curl -sf "$URL/health" > /dev/null && break
    kill -0 "$SERVER" 2> /dev/null || { tail -20 "$OUT/server.log"; exit 1; }
    sleep 2
done

# 1. The load table: 3 methods x concurrency 1,4,16,32, max(2*C, 8) requests per row (112 per method).
"$VENV/bin/python" -m vllm_elastic.bench --engine server --url "$URL" --methods llada,fastdllm,elastic \
    --gen-length 256 --num-prompts 64 --concurrency 1,4,16,32 --task arith --json "$OUT/server-arith-256.json"
# 2. Elastic-Cache with a drift threshold that fires often (γ 0.99), for the refresh plot.
"$VENV/bin/python" -m vllm_elastic.bench --engine server --url "$URL" --methods elastic --gamma 0.99 \
    --gen-length 256 --num-prompts 64 --concurrency 16 --requests 64 --task arith \
    --json "$OUT/server-arith-256-g099.json"
"$VENV/bin/python" benchmarks/plot_refreshes.py "$OUT/server-arith-256.json" "$OUT/server-arith-256-g099.json" \
    --out docs/refreshes_per_layer.png
# 3. lm-eval-harness on the local arith and code tasks (benchmarks/lm_eval), the server's default method (elastic).
HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 "$VENV/bin/lm_eval" --model local-completions \
    --model_args "model=models/llada-tiny,base_url=$URL/v1/completions,tokenizer=models/llada-tiny,tokenizer_backend=huggingface,num_concurrent=4,max_length=512,max_gen_toks=256" \
    --include_path benchmarks/lm_eval --tasks elastic_arith,elastic_code --limit 16 --output_path "$OUT/lm_eval"
