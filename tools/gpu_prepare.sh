#!/usr/bin/env bash
# Prepare what tools/gpu_check.sh takes to a GPU machine that has no internet and takes at most
# 64 MiB along: the plugin library with its AOT cubins and the host test (built here, no GPU
# needed), and real smollm2-135m layers (the 98 MB model itself is too big to carry).
#
#   bash tools/gpu_prepare.sh            # → plugins_trt/build-gpu/, out/gpu_assets/real_layers.npz (~45 MiB)
#
# Then, on the GPU machine, from the repository root with both folders beside it:
#   bash tools/gpu_check.sh RESULTS_DIR
set -euo pipefail
cd "$(dirname "$0")/.."
. "${VENV:-.venv}/bin/activate"
ARCHS=${FREEACT_GPU_ARCHS:-80;86;87;89;90;100;110;120}
python -c "from freeact_export.runtime.plugin_lib import build; print(build('plugins_trt/build-gpu', cuda_archs='$ARCHS'))"
python tools/real_layers.py --out out/gpu_assets/real_layers.npz
du -sh plugins_trt/build-gpu out/gpu_assets
