"""plugins_trt builds without TensorRT or a GPU, exports only its interface, and its plugins keep the op schemas.

The library is built once per module; the host test (plugins_trt/tests/hostTest.cpp) then drives it
through TensorRT's plugin interfaces (dlopen, getCreators, IPluginV3) against the schema JSON written
here from freeact_export.ops.schema, so the C++ creators are checked against the Python contract.
The kernel math test (plugins_trt/tests/kernelMathTest.cpp) checks the kernels' host/device helpers on
the CPU. Skipped, with the reason, where nvcc or cmake is missing; the host-test checks are skipped,
with CMake's reason, where nlohmann/json was not found (tools/setup.sh installs it).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest

from freeact_export.errors import UserError
from freeact_export.ops.schema import schema_json
from freeact_export.runtime import plugin_lib

MISSING = [tool for tool in ("nvcc", "cmake") if shutil.which(tool) is None]
pytestmark = pytest.mark.skipif(bool(MISSING), reason=f"building plugins_trt needs {' and '.join(MISSING)}")

REQUIRED_EXPORTS = {"getCreators", "setLoggerFinder", "freeactQuantize", "freeactInt4MatMul", "freeactCApiVersion"}
KERNEL_MATH_TEST_NAME = "freeact_kernel_math_test"


@pytest.fixture(scope="module")
def build_dir(plugin_build):
    return plugin_build


@pytest.fixture(scope="module")
def host_test(build_dir):
    """The host test executable; skipped with CMake's reason where it was not built (no nlohmann/json)."""
    cache = (build_dir / "CMakeCache.txt").read_text()
    reason = re.search(r"^FREEACT_HOST_TEST_SKIPPED:INTERNAL=(.*)$", cache, re.MULTILINE)
    if reason is not None and reason.group(1):
        pytest.skip(reason.group(1))
    path = build_dir / plugin_lib.HOST_TEST_NAME
    assert path.is_file(), f"CMake configured {plugin_lib.HOST_TEST_NAME} but the build did not produce it"
    return path


def _library(build_dir):
    return build_dir / plugin_lib.LIBRARY_NAME


def _dynamic_symbols(library, *flags: str) -> set[str]:
    out = subprocess.run(["nm", "-D", *flags, str(library)], capture_output=True, text=True, check=True).stdout
    return {line.split()[-1].split("@")[0] for line in out.splitlines() if line.strip()}


def test_the_library_exports_exactly_its_interface(build_dir):
    exported = _dynamic_symbols(_library(build_dir), "--defined-only")
    assert REQUIRED_EXPORTS <= exported
    # Nothing else: no C++ symbols, no static CUDA runtime, no helpers without the freeact prefix.
    assert {name for name in exported if not name.startswith("freeact")} == {"getCreators", "setLoggerFinder"}


def test_the_library_does_not_need_libnvinfer(build_dir):
    library = _library(build_dir)
    dynamic = subprocess.run(["readelf", "-d", str(library)], capture_output=True, text=True, check=True).stdout
    needed = [line for line in dynamic.splitlines() if "(NEEDED)" in line]
    assert needed and not [line for line in needed if "nvinfer" in line or "libcudart" in line], needed
    # TensorRT's registry is found in the running process (dlsym), never as a link-time reference.
    undefined = _dynamic_symbols(library, "--undefined-only")
    assert not {"getPluginRegistry", "getLogger", "createInferRuntime_INTERNAL"} & undefined


def test_the_kernel_math_test_passes(build_dir):
    kernel_math_test = build_dir / KERNEL_MATH_TEST_NAME
    assert kernel_math_test.is_file()
    result = subprocess.run([str(kernel_math_test)], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"^[1-9]\d* passed, 0 failed$", result.stdout, re.MULTILINE), result.stdout


def test_the_host_test_passes_against_the_schemas(build_dir, host_test, tmp_path):
    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps(schema_json()))
    result = subprocess.run([str(host_test), "check", str(_library(build_dir)), str(schema)],
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert " 0 failed" in result.stdout


def test_the_host_test_catches_a_creator_that_breaks_the_schema(build_dir, host_test, tmp_path):
    contract = schema_json()
    for op in contract["ops"]:
        if op["name"] == "FreeActQuantize":
            op["attributes"][0]["allowed"] = [4, 8, 2]  # a value the creator (rightly) refuses
    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps(contract))
    result = subprocess.run([str(host_test), "check", str(_library(build_dir)), str(schema)],
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 1
    assert "FAIL: FreeActQuantize (bits=2" in result.stdout


def test_the_gpu_mode_skips_cleanly_without_a_device(build_dir, host_test, tmp_path):
    (tmp_path / "case.txt").write_text("op Int4MatMul\n")
    result = subprocess.run([str(host_test), "run", str(_library(build_dir)), str(tmp_path)],
                            capture_output=True, text=True, timeout=120, check=False)
    if "SKIP: no CUDA device" not in result.stdout:
        pytest.skip("a CUDA device is present: tests/gpu/test_plugins_gpu.py runs the GPU mode")
    assert result.returncode == 77


def test_library_path_follows_the_environment(build_dir, monkeypatch, tmp_path):
    monkeypatch.setenv(plugin_lib.ENV_LIBRARY, str(_library(build_dir)))
    assert plugin_lib.library_path() == _library(build_dir)
    monkeypatch.setenv(plugin_lib.ENV_LIBRARY, str(tmp_path / "missing.so"))
    with pytest.raises(UserError, match="cmake --build"):
        plugin_lib.library_path()
