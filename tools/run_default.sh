#!/usr/bin/env bash
# The main job on the default model: set up, then evaluate smollm2-135m in PyTorch, export it
# to ONNX, and evaluate the ONNX graph in ONNX Runtime (EVAL.md protocol, wiki corpus).
# Results land in out/ (ppl-torch.json, smollm2-135m-fp32/, ppl-onnx.json).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
. "${VENV:-.venv}/bin/activate"
mkdir -p out
freeact-export eval --model smollm2-135m --corpus wiki --json out/ppl-torch.json --overwrite
freeact-export export --model smollm2-135m -o out/smollm2-135m-fp32 --overwrite
freeact-export eval --model out/smollm2-135m-fp32 --corpus wiki --json out/ppl-onnx.json --overwrite
