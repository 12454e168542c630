#!/usr/bin/env bash
# The main job on the default model: set up, evaluate smollm2-135m in PyTorch, export it to
# ONNX and evaluate that graph (docs/evaluation.md protocol, wiki corpus), then the ONNX-in path:
# calibrate the exported graph with ONNX Runtime, learn FreeAct W4A4 (the defaults: freeact-general,
# token types sink=pos:1), write the plugin graph and the portable graph, and check three-way
# parity and perplexities.
# Results land in out/ (ppl-torch.json, smollm2-135m-fp32/, ppl-onnx.json,
# smollm2-135m-freeact-w4a4/ with report.json and check/check.json).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
. "${VENV:-.venv}/bin/activate"
mkdir -p out
freeact-export eval --model smollm2-135m --corpus wiki --json out/ppl-torch.json --overwrite
freeact-export export --model smollm2-135m -o out/smollm2-135m-fp32 --overwrite
freeact-export eval --model out/smollm2-135m-fp32 --corpus wiki --json out/ppl-onnx.json --overwrite
freeact-export out/smollm2-135m-fp32 --bits w4a4 -o out/smollm2-135m-freeact-w4a4 --overwrite
