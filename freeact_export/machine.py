"""Facts about the machine that build records and bundle manifests hold: GPU 0, the driver's CUDA
version, TensorRT's CUDA major version, file hashes.

Standard library only (ctypes on the CUDA driver API): `freeact-export build` reads the build
machine through it, and every edge bundle carries a copy beside runner.py, which reads the
target machine through the same code without freeact-export installed.
"""

from __future__ import annotations

import ctypes
import hashlib
from pathlib import Path

_CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR = 75
_CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR = 76


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def tensorrt_cuda_major() -> int | None:
    """The CUDA major version the installed TensorRT wheel targets (tensorrt-cu12 → 12), if pip says."""
    try:
        from importlib import metadata
    except ImportError:  # pragma: no cover - Python < 3.8
        return None
    for dist in metadata.distributions():
        name = (dist.metadata.get("Name") or "").lower().replace("_", "-")
        if name.startswith("tensorrt-cu"):
            digits = "".join(ch for ch in name[len("tensorrt-cu"):].split("-")[0] if ch.isdigit())
            if digits:
                return int(digits)
    return None


def probe_gpu() -> dict:
    """GPU 0 and the driver through the CUDA driver API (libcuda, part of every NVIDIA driver).

    Returns {"gpu": None, "why": ...} where no driver or no device is usable.
    """
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return {"gpu": None, "why": "no NVIDIA driver (libcuda.so.1 not found)"}
    if cuda.cuInit(0) != 0:
        return {"gpu": None, "why": "the NVIDIA driver found no usable CUDA device (cuInit failed)"}
    version, count = ctypes.c_int(), ctypes.c_int()
    cuda.cuDriverGetVersion(ctypes.byref(version))
    driver = f"{version.value // 1000}.{version.value % 1000 // 10}"
    if cuda.cuDeviceGetCount(ctypes.byref(count)) != 0 or count.value < 1:
        return {"gpu": None, "cuda_driver": driver, "why": "no CUDA device"}
    device, major, minor = ctypes.c_int(), ctypes.c_int(), ctypes.c_int()
    cuda.cuDeviceGet(ctypes.byref(device), 0)
    name = ctypes.create_string_buffer(256)
    cuda.cuDeviceGetName(name, 256, device)
    cuda.cuDeviceGetAttribute(ctypes.byref(major), _CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, device)
    cuda.cuDeviceGetAttribute(ctypes.byref(minor), _CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, device)
    return {"gpu": name.value.decode(errors="replace"), "compute_capability": f"{major.value}.{minor.value}",
            "sm": f"sm_{major.value}{minor.value}", "cuda_driver": driver}


def probe_machine() -> dict:
    """The facts `mismatches` judges: TensorRT version (None where it does not import), its CUDA
    major version, and GPU 0 (name, compute capability, the driver's CUDA version)."""
    facts = {"tensorrt": None, "tensorrt_cuda_major": None}
    try:
        import tensorrt

        facts["tensorrt"] = tensorrt.__version__
        facts["tensorrt_cuda_major"] = tensorrt_cuda_major()
    except ImportError as err:
        facts["tensorrt_why"] = f"import tensorrt failed: {err}"
    facts.update(probe_gpu())
    return facts
