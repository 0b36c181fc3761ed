#!/usr/bin/env bash
# Write the held-out problems of the test-bed families: data/{story,program,listing}_{256,512,1024}.jsonl.
# Fixed seeds, so the files are reproducible; the trainer skips every prompt in data/*.jsonl.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
N=100
seed=2001
for task in story program listing; do
    for canvas in 256 512 1024; do
        $PY -m vllm_elastic.tasks "$task" "$N" "$seed" "data/${task}_${canvas}.jsonl" --canvas "$canvas"
        seed=$((seed + 1))
    done
done
