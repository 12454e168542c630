#!/usr/bin/env bash
# The one prepared check for a GPU machine (H100 or any NVIDIA GPU with a driver for CUDA 12+,
# Python 3.10+, torch with CUDA, triton, pytest, numpy, onnx; no internet): every GPU test, then
# the kernel benchmark, results as JSON in RESULTS_DIR. Any skipped GPU test is a failure.
#
#   bash tools/gpu_prepare.sh              # first, on any machine with the project set up (no GPU)
#   bash tools/gpu_check.sh RESULTS_DIR    # then on the GPU machine, from the repository root
#
# Runs without installing the package (PYTHONPATH=repository root). Uses, when present:
#   out/gpu_assets/plugin/          the plugin library (AOT cubins) and host test from gpu_prepare.sh
#   out/gpu_assets/real_layers.npz  real smollm2-135m layers (tools/real_layers.py)
# Writes RESULTS_DIR/gpu.json (device, versions, test counts, pass/fail), gpu_tests.xml (JUnit),
# tests.log, and bench/bench_kernels.{json,md,png}. Exit 0 only if every test ran and passed.
# Budget: under 8 minutes on an H100 (the tests' own limit is GPU_CHECK_TEST_S, default 330 s).
set -uo pipefail
cd "$(dirname "$0")/.."
RESULTS=${1:?usage: bash tools/gpu_check.sh RESULTS_DIR}
mkdir -p "$RESULTS"
PYTHON=${PYTHON:-python3}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
unset TRITON_INTERPRET  # the GPU tests need Triton's compiler, not its interpreter
[ -f out/gpu_assets/real_layers.npz ] && export FREEACT_REAL_LAYERS=${FREEACT_REAL_LAYERS:-$PWD/out/gpu_assets/real_layers.npz}
[ -d out/gpu_assets/plugin ] && export FREEACT_PLUGIN_BUILD=${FREEACT_PLUGIN_BUILD:-$PWD/out/gpu_assets/plugin}

start=$(date +%s)
timeout "${GPU_CHECK_TEST_S:-330}" "$PYTHON" -m pytest -p no:cacheprovider -q -rs \
  tests/gpu/test_kernels_gpu.py tests/gpu/test_plugins_gpu.py \
  --junitxml="$RESULTS/gpu_tests.xml" 2>&1 | tee "$RESULTS/tests.log"
tests_rc=${PIPESTATUS[0]}
tests_s=$(( $(date +%s) - start ))

bench_rc=skipped
if "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  timeout "${GPU_CHECK_BENCH_S:-120}" "$PYTHON" tools/bench_kernels.py --out "$RESULTS/bench" 2>&1 | tee "$RESULTS/bench.log"
  bench_rc=${PIPESTATUS[0]}
fi

"$PYTHON" tools/gpu_summary.py "$RESULTS" "$tests_rc" "$tests_s" "$bench_rc"
