"""Where the TensorRT plugin library is, and how to build it (plugins_trt/, CMake + Triton, no GPU needed).

The library `libfreeact_trt_plugins.so` holds both custom ops' TensorRT plugins and their kernels:
the Triton kernels of freeact_export/kernels/, compiled ahead of time into cubins for every listed
GPU architecture (`python -m freeact_export.kernels.aot`, run by the CMake build) and launched
through the CUDA driver API, which the library loads at run time. Building needs CMake, a C++17
compiler and this Python with Triton — no nvcc, no CUDA runtime, no GPU; Python only loads what
this builds.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import shutil
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

from freeact_export.errors import UserError

SOURCE_DIR = Path(__file__).resolve().parents[2] / "plugins_trt"
DEFAULT_BUILD_DIR = SOURCE_DIR / "build"
LIBRARY_NAME = "libfreeact_trt_plugins.so"
HOST_TEST_NAME = "freeact_host_test"
PLAN_TEST_NAME = "freeact_plan_test"
AOT_JSON = Path("aot") / "aot_kernels.json"  # in the build folder: the cubin table the library holds
ENV_LIBRARY = "FREEACT_PLUGIN_LIB"
BUILD_HINT = ("build it with `python -c 'from freeact_export.runtime.plugin_lib import build; build()'` "
              "or `cmake -S plugins_trt -B plugins_trt/build -DFREEACT_PYTHON=$(which python) && "
              "cmake --build plugins_trt/build -j2` (needs CMake and this Python with Triton; no GPU)")


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


def build(build_dir: str | Path | None = None, cuda_archs: str | Iterable[int] | None = None, jobs: int = 2) -> Path:
    """Configure and build plugins_trt with CMake; returns the built library's path.

    Args:
        build_dir: CMake build folder (default plugins_trt/build); the library lands in it, the
            cubins and their table (aot/aot_kernels.json) under it.
        cuda_archs: FREEACT_CUDA_ARCHS, the GPU architectures to compile the kernels for: "80;90",
            "80,90", [80, 90], or "native" (the GPUs of this machine, through the driver). Default:
            the CMake cache's, else every architecture aot.py knows (80;86;87;89;90;100;103;110;120;121).
            Compiled cubins are cached (~/.cache/freeact-export/aot), so rebuilds take seconds.
            A GPU runs the cubins of its own architecture, else those of the highest one of the
            same major version and a lower minor one (not for the arch-specific sm_90a and later).
        jobs: parallel compile jobs (C++ and the Triton compile processes).

    TensorRT's headers come from $TENSORRT_ROOT when set, else from the kernel-lens wheel in this
    interpreter's environment; libnvinfer, the CUDA runtime and libcuda are never linked.

    Raises:
        UserError: cmake or Triton is missing, the architectures are not ones aot.py compiles for,
            or the configure or build step fails (with its output's tail).
    """
    if shutil.which("cmake") is None:
        raise UserError("building the TensorRT plugins needs CMake >= 3.24: `cmake` is not on PATH")
    if importlib.util.find_spec("triton") is None:
        raise UserError(f"building the TensorRT plugins compiles the Triton kernels ahead of time, and this Python "
                        f"({sys.executable}) has no triton: install it (tools/setup.sh) or build with another Python")
    folder = Path(build_dir) if build_dir is not None else DEFAULT_BUILD_DIR
    configure = ["cmake", "-S", str(SOURCE_DIR), "-B", str(folder), f"-DFREEACT_PYTHON={sys.executable}",
                 f"-DFREEACT_AOT_JOBS={max(1, jobs)}"]
    if cuda_archs is not None:
        configure.append(f"-DFREEACT_CUDA_ARCHS={archs_value(cuda_archs)}")
    _run(configure, "configuring plugins_trt")
    _run(["cmake", "--build", str(folder), "-j", str(max(1, jobs))], "building plugins_trt")
    library = folder / LIBRARY_NAME
    if not library.is_file():
        raise UserError(f"the plugins_trt build finished without {library}")
    return library


def archs_value(cuda_archs: str | Iterable[int]) -> str:
    """FREEACT_CUDA_ARCHS for `cuda_archs` ("80;90", "80,90", [80, 90] or "native"), checked against aot.ARCHS."""
    from freeact_export.kernels.aot import ARCHS

    if isinstance(cuda_archs, str) and cuda_archs.strip() == "native":
        archs = native_archs()
    else:
        parts = cuda_archs.replace(",", ";").split(";") if isinstance(cuda_archs, str) else list(cuda_archs)
        try:
            archs = sorted({int(str(a).strip()) for a in parts if str(a).strip()})
        except ValueError:
            raise UserError(f"cuda_archs must be compute capabilities like '80;90' (got {cuda_archs!r})") from None
    unknown = [a for a in archs if a not in ARCHS]
    if not archs or unknown:
        raise UserError(f"cuda_archs {cuda_archs!r}: the ahead-of-time build compiles for "
                        f"{', '.join(map(str, ARCHS))}" + (f", not {unknown}" if unknown else ""))
    return ";".join(map(str, archs))


def native_archs() -> list[int]:
    """The compute capabilities (major * 10 + minor) of this machine's GPUs, through libcuda.

    Raises:
        UserError: no driver or no CUDA device.
    """
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError as exc:
        raise UserError(f"cuda_archs='native' needs the NVIDIA driver (libcuda.so.1): {exc}") from None
    count = ctypes.c_int(0)
    if cuda.cuInit(0) != 0 or cuda.cuDeviceGetCount(ctypes.byref(count)) != 0 or count.value == 0:
        raise UserError("cuda_archs='native': the driver reports no CUDA device")
    archs = set()
    for ordinal in range(count.value):
        device, major, minor = ctypes.c_int(0), ctypes.c_int(0), ctypes.c_int(0)
        cuda.cuDeviceGet(ctypes.byref(device), ordinal)
        cuda.cuDeviceGetAttribute(ctypes.byref(major), 75, device)  # CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR
        cuda.cuDeviceGetAttribute(ctypes.byref(minor), 76, device)  # ..._MINOR
        archs.add(major.value * 10 + minor.value)
    return sorted(archs)


def _run(command: list[str], what: str) -> None:
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        output = (result.stdout + result.stderr).strip().splitlines()
        tail = " | ".join(line.strip() for line in output[-6:])
        hint = ""
        if "No TensorRT headers" in result.stdout + result.stderr:
            hint = " (set TENSORRT_ROOT or `pip install --no-deps kernel-lens==2.0.1`)"
        elif "cannot import triton" in result.stdout + result.stderr:
            hint = " (the build compiles the Triton kernels: it needs a Python with triton)"
        raise UserError(f"{what} failed{hint}: {tail}")
