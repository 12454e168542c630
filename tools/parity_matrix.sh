#!/usr/bin/env bash
# The tiny-model parity tests under every float summation order CI may land on: PyTorch's CPU kernels
# at each vector width (ATEN_CPU_CAPABILITY default = no SIMD, avx2, avx512; a width the CPU lacks
# falls back to the widest it has) and one or two threads (PyTorch splits its sums by thread). A rounding tie may fall either way in each; `check` must pass in all of them.
# Part of tools/test.sh; about 4 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
. "${VENV:-.venv}/bin/activate"
for capability in default avx2 avx512; do
  for threads in 1 2; do
    echo "parity under ATEN_CPU_CAPABILITY=$capability OMP_NUM_THREADS=$threads"
    ATEN_CPU_CAPABILITY=$capability OMP_NUM_THREADS=$threads \
      python -m pytest -q -p no:cacheprovider "tests/unit/test_rewrite.py::test_three_way_parity"
  done
done
