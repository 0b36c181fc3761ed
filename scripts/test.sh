#!/usr/bin/env bash
# The test suite on a fresh machine: set up .venv, then run pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup_venv.sh
exec .venv/bin/python -m pytest -q "$@"
