#!/usr/bin/env bash
# Set up, lint, and run the whole test suite (CPU only; GPU and TensorRT tests skip with the
# reason). About 5 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
. "${VENV:-.venv}/bin/activate"
ruff check freeact_export tests tools
python -m pytest -q "$@"
