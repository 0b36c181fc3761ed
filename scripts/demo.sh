#!/usr/bin/env bash
# The main job: generate with the bundled tiny LLaDA by each method, printing the text and the speed.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup_venv.sh
exec .venv/bin/python examples/generate.py "$@"
