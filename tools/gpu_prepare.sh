#!/usr/bin/env bash
# Prepare what tools/gpu_check.sh takes to a GPU machine that has no internet and takes at most
# 64 MiB along: the plugin library with its AOT cubins and the host test (built here, no GPU
# needed), and real smollm2-135m layers (the 98 MB model itself is too big to carry).
#
#   bash tools/gpu_prepare.sh            # → out/gpu_assets/ (~25 MiB): plugin/ and real_layers.npz
#
# Then, on the GPU machine, from the repository root with both folders beside it:
#   bash tools/gpu_check.sh RESULTS_DIR
set -euo pipefail
cd "$(dirname "$0")/.."
. "${VENV:-.venv}/bin/activate"
ARCHS=${FREEACT_GPU_ARCHS:-80;86;87;89;90;100;103;110;120;121}
python -c "from freeact_export.runtime.plugin_lib import build; print(build('plugins_trt/build-gpu', cuda_archs='$ARCHS'))"
# Only what the GPU tests use: a build folder holds the cubins three times over (blob, objects, plan test).
# Written into a fresh sibling, then put in place; an out/gpu_assets this script did not write (no
# marker) is refused, never deleted.
ASSETS=out/gpu_assets
MARKER=.written-by-gpu_prepare
if [ -e "$ASSETS" ] && [ ! -f "$ASSETS/$MARKER" ]; then
  echo "gpu_prepare: $ASSETS exists and was not written by this script; move it away first" >&2
  exit 2
fi
mkdir -p out
PARTIAL=$(mktemp -d out/.gpu_assets.XXXXXX)
trap 'rm -rf "$PARTIAL"' EXIT
mkdir -p "$PARTIAL/plugin/aot"
cp plugins_trt/build-gpu/libfreeact_trt_plugins.so plugins_trt/build-gpu/freeact_host_test "$PARTIAL/plugin/"
cp plugins_trt/build-gpu/aot/aot_kernels.json "$PARTIAL/plugin/aot/"
python tools/real_layers.py --out "$PARTIAL/real_layers.npz"
touch "$PARTIAL/$MARKER"
if [ -e "$ASSETS" ]; then rm -rf "$ASSETS"; fi  # ours: it carries the marker (checked above)
mv "$PARTIAL" "$ASSETS"
trap - EXIT
du -sh "$ASSETS"
