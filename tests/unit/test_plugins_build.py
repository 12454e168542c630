"""plugins_trt builds without TensorRT, CUDA or a GPU, exports only its interface, and its plugins keep the op schemas.

The library is built once per session (conftest's plugin_build: every default architecture, the
Triton kernels compiled ahead of time into cubins). The host test (plugins_trt/tests/hostTest.cpp)
then drives it through TensorRT's plugin interfaces (dlopen, getCreators, IPluginV3) against the
schema JSON written here from freeact_export.ops.schema, so the C++ creators are checked against the
Python contract, and checks the library's cubin table (freeactAotManifest) against the build's
aot_kernels.json. The plan test (plugins_trt/tests/planTest.cpp) prints the launchers' tile, split-K
and architecture choices, compared here with variants.py. Skipped, with the reason, where cmake is
missing; the host-test checks are skipped, with CMake's reason, where nlohmann/json was not found
(tools/setup.sh installs it).
"""

from __future__ import annotations

import itertools
import json
import re
import shutil
import subprocess

import pytest

from freeact_export.errors import UserError
from freeact_export.kernels import aot, variants
from freeact_export.ops.schema import schema_json
from freeact_export.runtime import plugin_lib

pytestmark = pytest.mark.skipif(shutil.which("cmake") is None, reason="building plugins_trt needs cmake")

EXPORTS = {"getCreators", "setLoggerFinder", "freeactAotManifest"}


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


def _host_check(host_test, build_dir, schema_path, aot_json=None):
    aot_json = aot_json or build_dir / plugin_lib.AOT_JSON
    return subprocess.run([str(host_test), "check", str(_library(build_dir)), str(schema_path), str(aot_json)],
                          capture_output=True, text=True, timeout=300, check=False)


def _write_schema(tmp_path, contract=None):
    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps(contract or schema_json()))
    return schema


def test_the_library_exports_exactly_its_interface(build_dir):
    # Nothing else: no C++ symbols, no kernel table, no driver loader, no retired C API.
    assert _dynamic_symbols(_library(build_dir), "--defined-only") == EXPORTS


def test_the_library_needs_neither_tensorrt_nor_cuda_libraries(build_dir):
    library = _library(build_dir)
    dynamic = subprocess.run(["readelf", "-d", str(library)], capture_output=True, text=True, check=True).stdout
    needed = [line for line in dynamic.splitlines() if "(NEEDED)" in line]
    assert needed, dynamic
    assert not [line for line in needed if re.search(r"nvinfer|libcudart|libcuda\b|libcuda\.", line)], needed
    # TensorRT's registry is found in the running process and the driver through dlopen/dlsym: neither is
    # a link-time reference.
    undefined = _dynamic_symbols(library, "--undefined-only")
    assert not {"getPluginRegistry", "getLogger", "createInferRuntime_INTERNAL"} & undefined
    assert not {name for name in undefined if re.match(r"cu[A-Z]|cuda[A-Z]", name)}, undefined


def test_the_build_compiles_every_default_architecture(build_dir):
    table = json.loads((build_dir / plugin_lib.AOT_JSON).read_text())
    assert table["archs"] == list(aot.ARCHS)
    assert not table["left_out"], table["left_out"]
    assert {row["arch"] for row in table["kernels"]} == set(aot.ARCHS)
    assert len(table["kernels"]) == len(aot.all_variants()) * len(aot.ARCHS)


def test_the_host_test_passes_against_the_schemas_and_the_cubin_table(build_dir, host_test, tmp_path):
    result = _host_check(host_test, build_dir, _write_schema(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"^\d+ checks, 0 failed$", result.stdout, re.MULTILINE), result.stdout
    cubins = len(aot.all_variants()) * len(aot.ARCHS)
    assert f"cubin table: {cubins} cubins" in result.stdout and f"{cubins} hashed, 0 failed" in result.stdout


def test_the_host_test_catches_a_creator_that_breaks_the_schema(build_dir, host_test, tmp_path):
    contract = schema_json()
    for op in contract["ops"]:
        if op["name"] == "FreeActQuantize":
            op["attributes"][0]["allowed"] = [4, 8, 2]  # a value the creator (rightly) refuses
    result = _host_check(host_test, build_dir, _write_schema(tmp_path, contract))
    assert result.returncode == 1
    assert "FAIL: FreeActQuantize (bits=2" in result.stdout


def test_the_host_test_catches_a_cubin_table_that_differs_from_the_build(build_dir, host_test, tmp_path):
    table = json.loads((build_dir / plugin_lib.AOT_JSON).read_text())
    first, second = table["kernels"][0], table["kernels"][1]
    first["sha256"] = "0" * 64
    second["shared"] += 16
    table["kernels"].append({**table["kernels"][2], "arch": 75})  # a cubin the library lacks
    changed = tmp_path / "aot_kernels.json"
    changed.write_text(json.dumps(table))
    result = _host_check(host_test, build_dir, _write_schema(tmp_path), changed)
    assert result.returncode == 1, result.stdout
    failures = [line for line in result.stdout.splitlines() if line.startswith("FAIL: ")]
    assert any("sha256" in line for line in failures), failures
    assert any("shared as in aot_kernels.json" in line for line in failures), failures
    assert any("sm_75 is in the library" in line for line in failures), failures


def test_the_gpu_mode_skips_cleanly_without_a_device(build_dir, host_test, tmp_path):
    (tmp_path / "case.txt").write_text("op Int4MatMul\n")
    result = subprocess.run([str(host_test), "run", str(_library(build_dir)), str(tmp_path)],
                            capture_output=True, text=True, timeout=120, check=False)
    if "SKIP: no CUDA device" not in result.stdout:
        pytest.skip("a CUDA device is present: tests/gpu/test_plugins_gpu.py runs the GPU mode")
    assert result.returncode == 77


def _plan(build_dir, questions: list[str]) -> list[str]:
    result = subprocess.run([str(build_dir / plugin_lib.PLAN_TEST_NAME)], input="\n".join(questions) + "\n",
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    answers = result.stdout.splitlines()
    assert len(answers) == len(questions)
    return answers


def test_the_launchers_choose_tiles_as_variants_does(build_dir):
    pairs = [(d1, d2) for d1 in (1, 2, 3, 8, 15, 16, 17, 32, 33, 64, 65, 100, 128, 129, 256)
             for d2 in (1, 2, 7, 16, 31, 32, 64, 96, 128, 129, 200)]
    answers = _plan(build_dir, [f"kron {d1} {d2}" for d1, d2 in pairs])
    for (d1, d2), answer in zip(pairs, answers, strict=True):
        tile = variants.kron_tile(d1, d2)
        want = "none" if tile is None else f"{tile[0]} {tile[1]} {variants.kron_warps(tile)}"
        assert answer == want, (d1, d2)


def test_the_launchers_split_k_as_launch_does(build_dir):
    shapes = list(itertools.product((1, 2, 7, 16, 17, 100, 128, 129, 3000), (1, 48, 64, 65, 1000, 4096, 11008),
                                    (0, 2, 64, 512, 1000, 1024, 4096, 4352, 14336), (0, 2, 32, 64, 128, 1024),
                                    (1, 4, 46, 108, 132, 170)))
    shapes = [s for s in shapes if not s[3] or s[2] % s[3] == 0]
    answers = _plan(build_dir, [f"matmul {t} {n} {k} {g} {sms}" for t, n, k, g, sms in shapes])
    for (tokens, n, k, group, sms), answer in zip(shapes, answers, strict=True):
        tile = variants.matmul_tile(tokens)
        head = f"{tile.bm} {tile.bn} {tile.bk} {tile.num_warps} {int(tile.split_k)}"
        if k == 0:
            assert answer == f"{head} 0 0 1 1 1"  # nothing to sum: one split writes the epilogue
            continue
        seg_len, segs, per_split, ws_div = variants.split_plan(tile, n, k, group, sms)
        splits = -(-segs // per_split)
        assert answer == f"{head} {seg_len} {segs} {per_split} {ws_div} {splits}", (tokens, n, k, group, sms)


def test_the_workspace_bounds_every_split_k_plan(build_dir):
    shapes = [(k, g) for k in (2, 512, 1000, 1024, 1536, 1792, 3328, 4096, 11008, 14336, 65536)
              for g in (0, 2, 32, 128, 1024) if not g or k % g == 0]
    answers = _plan(build_dir, [f"maxsplits 1 {k} {g}" for k, g in shapes]
                    + [f"workspace 4096 {k} 96 {g}" for k, g in shapes])
    maxima, workspaces = answers[:len(shapes)], answers[len(shapes):]
    decode = variants.matmul_tile(1)
    for (k, group), most, workspace in zip(shapes, maxima, workspaces, strict=True):
        splits = [-(-segs // per) for _, segs, per, _ in
                  (variants.split_plan(decode, n, k, group, sms) for n in (1, 64, 96, 4096) for sms in range(1, 400))]
        assert int(most) == max(splits), (k, group)  # the bound is reached: no larger than needed
        assert int(workspace) == (int(most) * decode.max_tokens * 96 * 4 if int(most) > 1 else 0), (k, group)


def test_the_plugins_refuse_the_shapes_launch_refuses(build_dir):
    from freeact_export.kernels import launch

    cases = [(64, 8, 8, 4), (512, 2, 256, 8), (65536, 256, 256, 4), (6, 2, 3, 4), (6, 2, 3, 8), (16384, 128, 128, 4),
             (128, 64, 2, 8), (8192, 256, 32, 4)]
    answers = _plan(build_dir, [f"quantize {d} {d1} {d2} {bits} 1" for d, d1, d2, bits in cases])
    for (_, d1, d2, bits), answer in zip(cases, answers, strict=True):
        try:
            launch.unsupported_tile(d1, d2, bits, variants.kron_tile(d1, d2))
            want = "ok"
        except UserError as exc:
            want = str(exc)
        assert answer == want


def test_the_architecture_fallback_rule(build_dir):
    answers = _plan(build_dir, ["arch 80", "arch 86", "arch 88", "arch 89", "arch 90", "arch 103", "arch 121",
                                "arch 101", "arch 122", "arch 75"])
    assert answers[:7] == ["80", "86", "87", "89", "90", "103", "121"]  # exact, else same major, lower minor
    # sm_100a / sm_120a cubins run on compute capability 10.0 / 12.0 only: no fallback for 10.1 or 12.2.
    assert answers[7].startswith("0 this GPU is sm_101") and "sm_100a" in answers[7]
    assert answers[8].startswith("0 this GPU is sm_122") and "sm_121a" in answers[8]
    assert answers[9].startswith("0 this GPU is sm_75") and "sm_80, sm_86" in answers[9]


def test_build_arguments(monkeypatch):
    assert plugin_lib.archs_value("80,90") == "80;90"
    assert plugin_lib.archs_value("90;80;90") == "80;90"
    assert plugin_lib.archs_value([120, 100]) == "100;120"
    with pytest.raises(UserError, match="compiles for 80"):
        plugin_lib.archs_value("75")
    with pytest.raises(UserError, match="compute capabilities"):
        plugin_lib.archs_value("sm_80")
    monkeypatch.setattr(plugin_lib.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(UserError, match="has no triton"):
        plugin_lib.build("/nonexistent")


def test_library_path_follows_the_environment(build_dir, monkeypatch, tmp_path):
    monkeypatch.setenv(plugin_lib.ENV_LIBRARY, str(_library(build_dir)))
    assert plugin_lib.library_path() == _library(build_dir)
    monkeypatch.setenv(plugin_lib.ENV_LIBRARY, str(tmp_path / "missing.so"))
    with pytest.raises(UserError, match="cmake --build"):
        plugin_lib.library_path()
