"""The edge bundle's manifest and the runner's refusals, with the machine's facts given.

`mismatches(manifest, machine, folder)` is the runner's whole decision; `probe_machine()` only
gathers the facts. Here the facts are written down (an Orin, an H100, this machine as probed), the
bundle files are hashed for real, and runner.py runs for real on this machine (no TensorRT, no
GPU) and must refuse with one line and exit status 2. Building a bundle from a real engine needs
TensorRT and a GPU: tests/trt/test_trt_engine.py.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from rewritten_tiny import rewritten_tiny

from freeact_export.deploy.bundle import PROBES, RUNNER, copy_runner, make_manifest, source_hashes
from freeact_export.deploy.bundle_runner import EXIT_REFUSED, MANIFEST, mismatches
from freeact_export.machine import probe_machine, sha256
from test_cli import assert_one_line_error, run_cli

ORIN = {"tensorrt": "10.14.1.48", "tensorrt_cuda_major": 12, "gpu": "Orin", "compute_capability": "8.7",
        "sm": "sm_87", "cuda_driver": "12.6"}
BUILD = {"tensorrt": {"version": "10.14.1.48", "fp16": True, "version_compatible": False,
                      "exclude_lean_runtime": False},
         "cuda": {"major": 12, "driver": "12.6"},
         "gpu": {"name": "Orin", "compute_capability": "8.7", "sm": "sm_87"},
         "profile": {"input_ids": {"min": [1, 1], "opt": [1, 64], "max": [1, 128]}}}


@pytest.fixture(scope="module")
def rewritten(tmp_path_factory, tiny_text_file):
    return rewritten_tiny(tmp_path_factory.mktemp("bundle"), tiny_text_file)


def _bundle_folder(folder: Path, rewritten: Path, build: dict = BUILD) -> Path:
    """A bundle's files and manifest. The plan and library bytes stand in for an engine and a plugin
    library: the checks before loading only hash them."""
    folder.mkdir()
    (folder / "model.plan").write_bytes(b"serialized engine bytes")
    (folder / "libfreeact_trt_plugins.so").write_bytes(b"plugin library bytes")
    (folder / "build.json").write_text(json.dumps(build))
    copy_runner(folder)
    files = {p.name: sha256(p) for p in sorted(folder.iterdir())}
    manifest = make_manifest(build, files, source_hashes(rewritten), "model.plan", "libfreeact_trt_plugins.so")
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return folder


def _manifest(folder: Path) -> dict:
    return json.loads((folder / MANIFEST).read_text())


def test_manifest_names_versions_arch_and_hashes(tmp_path, rewritten):
    manifest = _manifest(_bundle_folder(tmp_path / "b", rewritten))
    assert manifest["tensorrt"] == {"version": "10.14.1.48", "version_compatible": False, "exclude_lean_runtime": False}
    assert manifest["cuda"]["major"] == 12 and manifest["gpu"]["sm"] == "sm_87"
    assert set(manifest["files"]) == {"model.plan", "libfreeact_trt_plugins.so", "build.json", RUNNER, PROBES}
    assert set(manifest["sources"]) == {"plugin.onnx", "plan/plan.json", "plan/plan.safetensors"}
    assert manifest["sources"]["plugin.onnx"] == sha256(rewritten / "plugin.onnx")
    assert manifest["freeact_export"] and manifest["format_version"] == 1


def test_matching_machine_is_accepted(tmp_path, rewritten):
    folder = _bundle_folder(tmp_path / "b", rewritten)
    assert mismatches(_manifest(folder), ORIN, folder) == []


def test_tampered_and_missing_files_are_refused(tmp_path, rewritten):
    folder = _bundle_folder(tmp_path / "b", rewritten)
    with open(folder / "model.plan", "ab") as handle:
        handle.write(b"\0")
    (folder / "build.json").unlink()
    assert mismatches(_manifest(folder), ORIN, folder) == [
        "file build.json is missing",
        "file model.plan does not match its sha256 in manifest.json (modified or corrupt)"]


@pytest.mark.parametrize(("machine", "expected"), [
    ({"sm": "sm_90", "gpu": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"},
     "GPU architecture sm_90 here (NVIDIA H100 80GB HBM3), the engine was built for sm_87 (Orin)"),
    ({"tensorrt": "10.15.1.29"},
     "TensorRT 10.15.1.29 here, the engine was built with TensorRT 10.14.1.48 (engines run only on the TensorRT "
     "version that built them)"),
    ({"cuda_driver": "11.8"}, "the NVIDIA driver here supports CUDA 11.8, TensorRT 10.14.1.48 was built for CUDA 12"),
    ({"tensorrt_cuda_major": 13}, "the TensorRT package here is built for CUDA 13, the engine's for CUDA 12"),
    ({"tensorrt": None, "tensorrt_why": "import tensorrt failed: No module named 'tensorrt'"},
     "TensorRT is not importable here (the engine needs TensorRT 10.14.1.48 exactly; import tensorrt failed: "
     "No module named 'tensorrt')"),
    ({"gpu": None, "why": "no NVIDIA driver (libcuda.so.1 not found)"},
     "no CUDA GPU here (no NVIDIA driver (libcuda.so.1 not found); the engine needs sm_87, built on Orin)"),
])
def test_wrong_machine_is_refused_with_what_differs(tmp_path, rewritten, machine, expected):
    folder = _bundle_folder(tmp_path / "b", rewritten)
    assert mismatches(_manifest(folder), {**ORIN, **machine}, folder) == [expected]


@pytest.mark.parametrize(("version", "ok"), [("10.14.1.48", True), ("10.16.0.72", True), ("10.13.3.9", False),
                                             ("11.0.0.1", False)])
def test_version_compatible_engines_run_on_later_runtimes_of_the_same_major(tmp_path, rewritten, version, ok):
    build = {**BUILD, "tensorrt": {**BUILD["tensorrt"], "version_compatible": True}}
    folder = _bundle_folder(tmp_path / "b", rewritten, build)
    problems = mismatches(_manifest(folder), {**ORIN, "tensorrt": version}, folder)
    assert problems == ([] if ok else [f"TensorRT {version} here, the version-compatible engine needs TensorRT 10.x "
                                       "at 10.14.1.48 or later"])


def test_probe_of_this_machine(tmp_path):
    facts = probe_machine()
    if facts["tensorrt"] is not None or facts["gpu"] is not None:
        pytest.skip("this machine has TensorRT or a GPU")
    assert facts["tensorrt_why"].startswith("import tensorrt failed")
    assert facts["why"]


def test_runner_on_this_machine_refuses_with_one_line_and_exit_2(tmp_path, rewritten):
    facts = probe_machine()
    if facts["tensorrt"] is not None and facts["gpu"] is not None:
        pytest.skip("this machine has TensorRT and a GPU")
    folder = _bundle_folder(tmp_path / "b", rewritten)
    result = subprocess.run([sys.executable, str(folder / RUNNER), "1", "2", "3"], capture_output=True, text=True,
                            cwd=tmp_path, timeout=120, check=False)
    assert result.returncode == EXIT_REFUSED, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("runner.py: refused: "), result.stderr
    assert ("TensorRT is not importable here" in lines[0]) == (facts["tensorrt"] is None)
    assert ("no CUDA GPU here" in lines[0]) == (facts["gpu"] is None)
    assert result.stdout == "" and "Traceback" not in result.stderr


def test_runner_refuses_a_folder_without_manifest(tmp_path):
    copy_runner(tmp_path)
    result = subprocess.run([sys.executable, str(tmp_path / RUNNER), "--check"], capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == EXIT_REFUSED
    assert result.stderr.startswith(f"runner.py: refused: cannot read {tmp_path / MANIFEST}")


def test_bundle_without_an_engine_says_so_in_one_line(capsys, rewritten, tmp_path):
    code, _, err = run_cli(capsys, "bundle", str(rewritten), "-o", str(tmp_path / "edge"))
    assert_one_line_error(code, err, f"no TensorRT engine in {rewritten / 'engine'}")
    assert "freeact-export build DIR" in err and not (tmp_path / "edge").exists()


def test_bundle_refuses_an_existing_output(capsys, rewritten, tmp_path):
    (tmp_path / "edge").mkdir()
    code, _, err = run_cli(capsys, "bundle", str(rewritten), "-o", str(tmp_path / "edge"))
    assert_one_line_error(code, err, "already exists")


@pytest.mark.parametrize(("record", "expected"), [
    ({k: v for k, v in BUILD.items() if k != "gpu"}, "lacks 'gpu.name'"),
    ({**BUILD, "plugin_library": {"path": "/x/libfreeact_trt_plugins.so", "sha256": "0" * 64}},
     "lacks 'plugin_graph_sha256'"),
    ("[1, 2", "is not valid JSON"),
])
def test_bundle_with_an_incomplete_build_record_is_one_line(capsys, rewritten, tmp_path, record, expected):
    # build.json as an interrupted copy or a hand edit leaves it: one line naming the file, the
    # missing key and the rebuild, before anything is written.
    engine = tmp_path / "engine"
    engine.mkdir()
    (engine / "model.plan").write_bytes(b"serialized engine bytes")
    (engine / "build.json").write_text(record if isinstance(record, str) else json.dumps(record))
    code, _, err = run_cli(capsys, "bundle", str(rewritten), "-o", str(tmp_path / "edge"), "--engine", str(engine))
    assert_one_line_error(code, err, f"{engine / 'build.json'} {expected}")
    assert "rebuild the engine with 'freeact-export build DIR --overwrite'" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["engine"]
