"""The TensorRT path end to end on a GPU: build an engine from a rewritten tiny model, check it
against ONNX Runtime and the simulation, bundle it, and run the bundle's runner.py.

Skipped as a whole, with the reason, where TensorRT is not installed, no CUDA device is present,
or nvcc / cmake (to build the plugin library) are missing.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pytest
from polygraphy.comparator import RunResults
from rewritten_tiny import rewritten_tiny

from freeact_export import api
from freeact_export.deploy.bundle_runner import EXIT_REFUSED, MANIFEST
from freeact_export.machine import probe_gpu
from freeact_export.onnx_in.session import exact_session_options
from freeact_export.parity.check import check
from freeact_export.runtime import plugin_lib
from freeact_export.runtime.trt_engine import BuildSpec, ProfileSpec

if importlib.util.find_spec("tensorrt") is None:
    pytest.skip("tensorrt not installed", allow_module_level=True)
if probe_gpu().get("gpu") is None:
    pytest.skip(f"no CUDA GPU here ({probe_gpu().get('why')})", allow_module_level=True)
if shutil.which("nvcc") is None or shutil.which("cmake") is None:
    pytest.skip("building plugins_trt needs nvcc and cmake", allow_module_level=True)

# check's saved inputs: two sample texts in one padded batch, and a 256-token corpus window
PROFILE = ProfileSpec(max_tokens=256, max_batch=2, opt_tokens=64)


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    """The plugin library for this machine's GPU only (one architecture builds fastest)."""
    return plugin_lib.build(tmp_path_factory.mktemp("plugins"), cuda_archs="native", jobs=8)


@pytest.fixture(scope="module")
def built(tmp_path_factory, tiny_text_file, library):
    folder = rewritten_tiny(tmp_path_factory.mktemp("trt"), tiny_text_file, method="freeact", bits="w4a4")
    record = api.build_engine(folder, profile=PROFILE, spec=BuildSpec(fp16=False), plugin_library=library)
    return folder, record


def test_build_writes_engine_and_record(built, library):
    folder, record = built
    assert (folder / "engine" / "model.plan").stat().st_size > 0
    on_disk = json.loads((folder / "engine" / "build.json").read_text())
    assert on_disk == record
    assert record["gpu"]["sm"] == probe_gpu()["sm"] and record["tensorrt"]["fp16"] is False
    assert record["profile"]["input_ids"] == {"min": [1, 1], "opt": [1, 64], "max": [2, 256]}
    assert (folder / "timing.cache").is_file()  # saved after the build, loaded by the next one


def test_fp16_rebuild_reuses_the_timing_cache(built, library, tmp_path):
    folder, _ = built
    record = api.build_engine(folder, tmp_path / "fp16", PROFILE, BuildSpec(fp16=True), plugin_library=library)
    assert record["tensorrt"]["fp16"] and (tmp_path / "fp16" / "model.plan").is_file()


def test_check_with_the_engine(built, tiny_text_file):
    folder, _ = built
    record = check(folder, corpus=str(tiny_text_file), eval_spec=None, progress=False)
    trt = record["tensorrt"]
    assert isinstance(trt, dict), trt
    assert [c["pair"] for c in trt["comparisons"]] == [["tensorrt", "simulation"], ["tensorrt", "plugin"],
                                                       ["tensorrt", "portable"]]
    assert trt["passed"] and record["passed"], json.dumps(trt, indent=1)
    assert trt["comparisons"][-1]["outputs"]["logits"]["sqnr_db"] > 30  # fp32 engine
    assert "tensorrt" in RunResults.load(str(folder / "check" / "outputs.json"))


def test_bundle_and_runner(built, tmp_path):
    folder, record = built
    manifest = api.bundle(folder, tmp_path / "edge")
    assert manifest["gpu"]["sm"] == record["gpu"]["sm"]
    runner = tmp_path / "edge" / "runner.py"
    ok = subprocess.run([sys.executable, str(runner), "--check"], capture_output=True, text=True, check=False)
    assert ok.returncode == 0, ok.stderr
    ids = [1, 17, 42, 99, 5, 230]
    run = subprocess.run([sys.executable, str(runner), *map(str, ids)], capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr
    tokens = [int(t) for t in run.stdout.split()]
    session = ort.InferenceSession(str(folder / "portable.onnx"), exact_session_options(),
                                   providers=["CPUExecutionProvider"])
    logits = session.run(["logits"], {"input_ids": np.asarray([ids], np.int64),
                                      "attention_mask": np.ones((1, len(ids)), np.int64)})[0][0]
    assert np.mean(np.asarray(tokens) == logits.argmax(-1)) >= 0.8  # fp32 engine; a rare near-tie may flip
    manifest_path = tmp_path / "edge" / MANIFEST
    tampered = json.loads(manifest_path.read_text())
    tampered["gpu"]["sm"] = "sm_10"
    manifest_path.write_text(json.dumps(tampered))
    refused = subprocess.run([sys.executable, str(runner), "1", "2"], capture_output=True, text=True, check=False)
    assert refused.returncode == EXIT_REFUSED and "the engine was built for sm_10" in refused.stderr
