"""The TensorRT plugins on a GPU, through their own interface, against the NumPy reference.

The host test's run mode (plugins_trt/tests/hostTest.cpp) takes each plugin the way TensorRT does:
creator (build phase) → output types and shapes → supportsFormatCombination → configurePlugin →
getWorkspaceSize → serialized fields → creator (runtime phase) → attachToContext → onShapeChange →
enqueue on a stream, on inputs written here, and writes the outputs back; the GPU is reached
through the driver API, as the library reaches it. The library is $FREEACT_PLUGIN_BUILD's where that
names a build folder (tools/gpu_prepare.sh builds one on a machine without a GPU: every
architecture's cubins), else built here for this GPU's architecture (`cuda_archs="native"`, needs
cmake and Triton). Codes equal the reference's except where float summation order decides a
rounding tie (±1, rare); scales and Int4MatMul outputs within float32 rounding. Skipped as a
whole, with the reason, without a CUDA device.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from freeact_export.ops import reference
from freeact_export.runtime import plugin_lib


def _cuda_devices() -> int:
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return 0
    count = ctypes.c_int(0)
    if cuda.cuInit(0) != 0 or cuda.cuDeviceGetCount(ctypes.byref(count)) != 0:
        return 0
    return count.value


if _cuda_devices() == 0:
    pytest.skip("no CUDA device here (libcuda reports none)", allow_module_level=True)

DTYPE_NAMES = {np.dtype(np.float32): "float32", np.dtype(np.float16): "float16", np.dtype(np.int32): "int32",
               np.dtype(np.int8): "int8"}


@pytest.fixture(scope="module")
def build_dir(tmp_path_factory):
    """A folder with the plugin library and the host test: $FREEACT_PLUGIN_BUILD's, else built here."""
    prebuilt = os.environ.get("FREEACT_PLUGIN_BUILD")
    if prebuilt:
        folder = Path(prebuilt)
        needed = (plugin_lib.LIBRARY_NAME, plugin_lib.HOST_TEST_NAME)
        missing = [name for name in needed if not (folder / name).is_file()]
        assert not missing, f"FREEACT_PLUGIN_BUILD={prebuilt} has no {', '.join(missing)} (tools/gpu_prepare.sh)"
        return folder
    if shutil.which("cmake") is None:
        pytest.skip("building plugins_trt needs cmake (or FREEACT_PLUGIN_BUILD naming a build folder)")
    folder = tmp_path_factory.mktemp("plugins_trt_gpu")
    plugin_lib.build(folder, cuda_archs="native", jobs=4)
    return folder


def _run(build_dir, case_dir, op: str, attrs: dict[str, int], inputs: dict[str, np.ndarray],
         outputs: dict[str, str]) -> dict[str, np.ndarray]:
    lines = [f"op {op}"] + [f"attr {k} {v}" for k, v in attrs.items()]
    for name, array in inputs.items():
        array = np.ascontiguousarray(array)
        lines.append(f"input {name} {DTYPE_NAMES[array.dtype]} {array.ndim} {' '.join(map(str, array.shape))}")
        (case_dir / f"{name}.bin").write_bytes(array.tobytes())
    lines += [f"output {name} {dtype}" for name, dtype in outputs.items()]
    (case_dir / "case.txt").write_text("\n".join(lines) + "\n")
    command = [str(build_dir / plugin_lib.HOST_TEST_NAME), "run", str(build_dir / plugin_lib.LIBRARY_NAME),
               str(case_dir)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    results = {}
    for line in (case_dir / "outputs.txt").read_text().splitlines():
        name, dtype, rank, *dims = line.split()
        assert int(rank) == len(dims)
        results[name] = np.fromfile(case_dir / f"{name}.bin", dtype=dtype).reshape([int(d) for d in dims])
    return results


def _quantize_inputs(rng, lead, d, d1, types_count, per_type, x_dtype):
    d2 = d // d1
    shape = (types_count, d1, d1) if per_type else (d1, d1)
    shape2 = (types_count, d2, d2) if per_type else (d2, d2)
    masks = np.ones((types_count, d), np.float32)
    masks[1:, : d // 8] = 0  # types past the first drop a block, as FreeAct's masks do
    return {
        "x": (rng.standard_normal((*lead, d)) * 3).astype(x_dtype),
        "types": rng.integers(0, types_count, lead).astype(np.int32),
        "smooth": rng.uniform(0.5, 2.0, d).astype(np.float32) * rng.choice([-1, 1], d).astype(np.float32),
        "kron_1": (rng.standard_normal(shape) / np.sqrt(d1)).astype(np.float32),
        "kron_2": (rng.standard_normal(shape2) / np.sqrt(d2)).astype(np.float32),
        "masks": masks,
        "clip": rng.uniform(0.8, 1.0, types_count).astype(np.float32),
    }


@pytest.mark.parametrize(("bits", "kronecker", "per_type", "x_dtype", "lead", "d", "d1"), [
    (4, 1, False, np.float32, (37,), 256, 16),
    (4, 1, True, np.float32, (2, 19), 256, 16),
    (8, 1, False, np.float16, (5,), 256, 16),
    (8, 1, True, np.float32, (64,), 256, 16),
    (4, 0, False, np.float16, (1,), 256, 16),
    (4, 0, False, np.float32, (9,), 3000, 1),  # no transform, more than one chunk of 1024
    (4, 1, False, np.float32, (7,), 8192, 64),  # tile 64 x 128: above 48 KiB of shared memory (opt-in)
    (8, 1, True, np.float16, (3,), 16384, 128),  # the largest tile, 128 x 128
    (4, 1, False, np.float32, (4,), 256, 64),  # d1 > d2 (64 x 4)
])
def test_freeact_quantize_plugin_matches_the_reference(build_dir, tmp_path, bits, kronecker, per_type, x_dtype, lead,
                                                       d, d1):
    rng = np.random.default_rng(bits * 10 + kronecker + per_type + d)
    inputs = _quantize_inputs(rng, lead, d, d1, 3, per_type, x_dtype)
    if not kronecker:
        inputs["kron_1"] = np.ones((1, 1), np.float32)
        inputs["kron_2"] = np.ones((1, 1), np.float32)
    got = _run(build_dir, tmp_path, "FreeActQuantize", {"bits": bits, "kronecker": kronecker}, inputs,
               {"codes": "int8", "scale": "float32"})
    codes, scale = reference.freeact_quantize(**inputs, bits=bits, kronecker=kronecker)
    assert got["codes"].shape == codes.shape and got["scale"].shape == scale.shape
    np.testing.assert_allclose(got["scale"], scale, rtol=1e-5)
    unpack = reference.unpack_int4 if bits == 4 else (lambda c: c)
    diff = np.abs(unpack(got["codes"]).astype(np.int16) - unpack(codes).astype(np.int16))
    assert diff.max() <= 1 and (diff > 0).mean() < 2e-3  # rounding ties only


@pytest.mark.parametrize(("act_bits", "group_size", "lead", "d"), [
    (4, 0, (1,), 512),
    (4, 64, (3, 11), 512),
    (8, 0, (96,), 512),
    (4, 0, (17,), 512),
    (4, 0, (1,), 4096),  # decode: K split into slices, partial sums in the workspace, then splitk_reduce
    (8, 64, (2, 5), 4096),  # decode, grouped: runs of groups per split
    (4, 128, (200,), 4096),  # prefill tile
])
def test_int4_matmul_plugin_matches_the_reference(build_dir, tmp_path, act_bits, group_size, lead, d):
    y_dtype = "float32"  # the schema's y and the only one the cubins write
    rng = np.random.default_rng(act_bits * 100 + group_size + d)
    n = 192
    qmax = 7 if act_bits == 4 else 127
    acts = rng.integers(-qmax - 1, qmax + 1, (*lead, d)).astype(np.int8)
    w = rng.integers(-8, 8, (n, d)).astype(np.int8)
    groups = 1 if group_size == 0 else d // group_size
    inputs = {
        "codes": reference.pack_int4(acts).view(np.int8) if act_bits == 4 else acts,
        "scale": rng.uniform(0.01, 0.1, (*lead, 1)).astype(np.float32),
        "weight": reference.pack_int4(w).view(np.int8),
        "weight_scale": rng.uniform(0.001, 0.01, (n, groups)).astype(np.float32),
        "bias": rng.standard_normal(n).astype(np.float32),
    }
    got = _run(build_dir, tmp_path, "Int4MatMul", {"act_bits": act_bits, "group_size": group_size}, inputs,
               {"y": y_dtype})
    y = reference.int4_matmul(**inputs, act_bits=act_bits, group_size=group_size)
    assert got["y"].shape == y.shape and got["y"].dtype == np.dtype(y_dtype)
    np.testing.assert_allclose(got["y"], y, rtol=1e-5, atol=1e-5 * np.abs(y).max())


def test_int4_matmul_refuses_a_float16_y(build_dir, tmp_path):
    rng = np.random.default_rng(0)
    inputs = {
        "codes": rng.integers(-128, 128, (2, 32)).astype(np.int8),
        "scale": np.ones((2, 1), np.float32),
        "weight": rng.integers(-128, 128, (48, 32)).astype(np.int8),
        "weight_scale": np.ones((48, 1), np.float32),
        "bias": np.zeros(48, np.float32),
    }
    with pytest.raises(AssertionError, match="does not support tensor 5"):
        _run(build_dir, tmp_path, "Int4MatMul", {"act_bits": 4, "group_size": 0}, inputs, {"y": "float16"})
