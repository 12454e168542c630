#!/usr/bin/env bash
# Set up, lint, run the whole test suite (CPU only; GPU and TensorRT tests skip with the reason),
# then the parity tests under every CPU float order (tools/parity_matrix.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
. "${VENV:-.venv}/bin/activate"
ruff check freeact_export tests tools
python -m pytest -q "$@"
bash tools/parity_matrix.sh
