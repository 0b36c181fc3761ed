#!/usr/bin/env bash
# Train the test-bed LLaDA (story, program and listing families at canvases 256/512/1024, and the
# sums, recite, transcribe and story_signs drills) from fixed seeds: 4,500 updates of LLaDA SFT (the masked
# positions' plain mean loss), three quarters of the test-bed batches in the block sampler's state
# (docs/TRAINING.md), sized for about 2.5 hours on 2 idle CPU cores. Resumable:
# rerunning this script continues from runs/train/state.pt (a checkpoint every 5 minutes), so one run
# can span sessions. Extra arguments go to the trainer (`--help` lists them). At the end the weights,
# tokenizer and log are copied to models/llada-testbed (or $OUT).
#   nice -n 19 scripts/train_tiny.sh --threads 1 > runs/train.log 2>&1 &   # background, shared machine
# (on a busy machine one thread is several times faster than two: docs/TRAINING.md, calibration)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup_venv.sh
PY=.venv/bin/python
RUN=${RUN:-runs/train}
OUT=${OUT:-models/llada-testbed}
$PY -m vllm_elastic.train.testbed --out "$RUN" "$@"
mkdir -p "$OUT"
cp "$RUN"/model/* "$RUN"/train_log.jsonl "$OUT"/
echo "exported $RUN/model to $OUT"
