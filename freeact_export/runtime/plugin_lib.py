"""Where the TensorRT plugin library is, and how to build it (plugins_trt/, CMake + nvcc).

The library `libfreeact_trt_plugins.so` holds both custom ops' TensorRT plugins, their CUDA kernels
and the C entry points the torch bindings call; Python only loads what this builds.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from freeact_export.errors import UserError

SOURCE_DIR = Path(__file__).resolve().parents[2] / "plugins_trt"
DEFAULT_BUILD_DIR = SOURCE_DIR / "build"
LIBRARY_NAME = "libfreeact_trt_plugins.so"
HOST_TEST_NAME = "freeact_host_test"
ENV_LIBRARY = "FREEACT_PLUGIN_LIB"
BUILD_HINT = ("build it with `python -c 'from freeact_export.runtime.plugin_lib import build; build()'` "
              "or `cmake -S plugins_trt -B plugins_trt/build && cmake --build plugins_trt/build -j2`")


def library_path() -> Path:
    """The plugin library: $FREEACT_PLUGIN_LIB, else plugins_trt/build/libfreeact_trt_plugins.so.

    Raises:
        UserError: the library is not there (the message says how to build it).
    """
    configured = os.environ.get(ENV_LIBRARY)
    path = Path(configured) if configured else DEFAULT_BUILD_DIR / LIBRARY_NAME
    if not path.is_file():
        where = f"{ENV_LIBRARY}={configured}" if configured else str(path)
        raise UserError(f"TensorRT plugin library not found at {where}: {BUILD_HINT}")
    return path


def build(build_dir: str | Path | None = None, cuda_archs: str | None = None, jobs: int = 2) -> Path:
    """Configure and build plugins_trt with CMake; returns the built library's path.

    Args:
        build_dir: CMake build folder (default plugins_trt/build); the library lands in it.
        cuda_archs: CMAKE_CUDA_ARCHITECTURES, e.g. "90" or "80;87;89;90" (default: the CMake
            file's, sm_80/87/89/90). Fewer architectures build faster.
        jobs: parallel compile jobs.

    TensorRT's headers come from $TENSORRT_ROOT when set, else from the kernel-lens wheel in this
    interpreter's environment; libnvinfer is never linked.

    Raises:
        UserError: cmake or nvcc is missing, or the configure or build step fails (with its output's tail).
    """
    for tool, why in (("cmake", "CMake >= 3.24"), ("nvcc", "the CUDA toolkit's nvcc (CUDA 12 or 13)")):
        if shutil.which(tool) is None:
            raise UserError(f"building the TensorRT plugins needs {why}: `{tool}` is not on PATH")
    folder = Path(build_dir) if build_dir is not None else DEFAULT_BUILD_DIR
    configure = ["cmake", "-S", str(SOURCE_DIR), "-B", str(folder), f"-DFREEACT_PYTHON={sys.executable}"]
    if cuda_archs:
        configure.append(f"-DCMAKE_CUDA_ARCHITECTURES={cuda_archs}")
    _run(configure, "configuring plugins_trt")
    _run(["cmake", "--build", str(folder), "-j", str(max(1, jobs))], "building plugins_trt")
    library = folder / LIBRARY_NAME
    if not library.is_file():
        raise UserError(f"the plugins_trt build finished without {library}")
    return library


def _run(command: list[str], what: str) -> None:
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        output = (result.stdout + result.stderr).strip().splitlines()
        tail = " | ".join(line.strip() for line in output[-6:])
        hint = ""
        if "No TensorRT headers" in result.stdout + result.stderr:
            hint = " (set TENSORRT_ROOT or `pip install --no-deps kernel-lens==2.0.1`)"
        raise UserError(f"{what} failed{hint}: {tail}")
