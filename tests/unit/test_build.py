"""`freeact-export build` on a machine without TensorRT: the profile from the graph's inputs, the
arguments, and one-line failures that say what to install; `check` records why TensorRT was skipped.

The engine build itself needs TensorRT and a GPU: tests/trt/test_trt_engine.py.
"""

import importlib.util
import shutil

import onnx
import pytest
from onnx import TensorProto, helper
from rewritten_tiny import rewritten_tiny

from freeact_export import manifest
from freeact_export.errors import UserError
from freeact_export.parity.check import check
from freeact_export.runtime import plugin_lib
from freeact_export.runtime.trt_engine import (
    BuildSpec,
    ProfileSpec,
    compute_profile,
    gpu_facts,
    graph_inputs,
)
from test_cli import assert_one_line_error, run_cli

HAS_TRT = importlib.util.find_spec("tensorrt") is not None
PREFILL = [("input_ids", ["batch", "sequence"]), ("attention_mask", ["batch", "sequence"])]
KV = [("input_ids", ["batch", "sequence"]), ("attention_mask", ["batch", "total"]),
      ("past_key_values.0.key", ["batch", 2, "past_sequence", 16]),
      ("past_key_values.0.value", ["batch", 2, "past_sequence", 16])]


@pytest.fixture(scope="module")
def rewritten(tmp_path_factory, tiny_text_file):
    return rewritten_tiny(tmp_path_factory.mktemp("build"), tiny_text_file)


def test_prefill_profile_covers_1_to_max_tokens_and_batch():
    profile = compute_profile(PREFILL, ProfileSpec(max_tokens=512, max_batch=4))
    assert profile == {"input_ids": ((1, 1), (1, 256), (4, 512)), "attention_mask": ((1, 1), (1, 256), (4, 512))}


def test_kv_profile_has_past_0_to_max_and_a_mask_over_past_plus_tokens():
    profile = compute_profile(KV, ProfileSpec(max_tokens=64, max_batch=2, opt_tokens=1, max_past=1000, opt_past=100))
    assert profile["input_ids"] == ((1, 1), (1, 1), (2, 64))
    assert profile["past_key_values.0.key"] == ((1, 2, 0, 16), (1, 2, 100, 16), (2, 2, 1000, 16))
    assert profile["past_key_values.0.value"] == profile["past_key_values.0.key"]
    assert profile["attention_mask"] == ((1, 1), (1, 101), (2, 1064))


def test_other_inputs_share_the_known_dims_and_fixed_dims_stay_fixed():
    inputs = [*PREFILL, ("position_ids", ["batch", "sequence"]), ("pixel_mask", [1, "sequence", 8])]
    profile = compute_profile(inputs, ProfileSpec(max_tokens=16))
    assert profile["position_ids"] == ((1, 1), (1, 8), (1, 16))
    assert profile["pixel_mask"] == ((1, 1, 8), (1, 8, 8), (1, 16, 8))


@pytest.mark.parametrize(("inputs", "fragment"), [
    ([("tokens", ["batch", "sequence"])], "no input_ids"),
    ([*PREFILL, ("image", ["batch", "height", 3])], "input image axis 1 is dynamic ('height')"),
    ([("input_ids", ["batch", None])], "input_ids axis 1 has an unnamed dynamic dim"),
    ([("input_ids", ["b", "s"]), ("past_key_values.0.key", ["b", "p", 16])], "expected [batch, kv heads, past"),
])
def test_profile_refuses_dims_whose_role_it_cannot_tell(inputs, fragment):
    with pytest.raises(UserError) as info:
        compute_profile(inputs, ProfileSpec())
    assert fragment in str(info.value)


@pytest.mark.parametrize(("fields", "fragment"), [
    ({"max_tokens": 0}, "max_tokens must be at least 1"),
    ({"max_tokens": 8, "opt_tokens": 9}, "opt_tokens must lie in 1..max_tokens"),
    ({"max_batch": 2, "opt_batch": 3}, "opt_batch (3) must not exceed max_batch (2)"),
    ({"max_past": 4, "opt_past": 5}, "opt_past must lie in 0..max_past"),
])
def test_profile_spec_validates(fields, fragment):
    with pytest.raises(ValueError) as info:
        ProfileSpec(**fields)
    assert fragment in str(info.value)


def test_exclude_lean_runtime_needs_version_compatible():
    with pytest.raises(ValueError, match="needs version_compatible"):
        BuildSpec(exclude_lean_runtime=True)
    assert BuildSpec(version_compatible=True, exclude_lean_runtime=True).to_dict()["exclude_lean_runtime"]


def test_strongly_typed_takes_no_fp16_flag():
    with pytest.raises(ValueError, match="strongly typed network takes its precisions from the graph"):
        BuildSpec(strongly_typed=True)
    assert BuildSpec(strongly_typed=True, fp16=False).to_dict() == {
        "fp16": False, "version_compatible": False, "exclude_lean_runtime": False, "strongly_typed": True}


def test_graph_inputs_reads_symbolic_and_fixed_dims(tmp_path):
    x = helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"])
    past = helper.make_tensor_value_info("past_key_values.0.key", TensorProto.FLOAT, ["batch", 2, "past", 4])
    y = helper.make_tensor_value_info("y", TensorProto.INT64, ["batch", "sequence"])
    graph = helper.make_graph([helper.make_node("Identity", ["input_ids"], ["y"])], "g", [x, past], [y])
    onnx.save(helper.make_model(graph), str(tmp_path / "g.onnx"))
    assert graph_inputs(tmp_path / "g.onnx") == [("input_ids", ["batch", "sequence"]),
                                                 ("past_key_values.0.key", ["batch", 2, "past", 4])]


def test_profile_of_a_rewritten_graph(rewritten):
    profile = compute_profile(graph_inputs(rewritten / "plugin.onnx"), ProfileSpec(max_tokens=256, max_batch=2))
    assert profile == {"input_ids": ((1, 1), (1, 128), (2, 256)), "attention_mask": ((1, 1), (1, 128), (2, 256))}


def test_build_without_plugin_library_says_how_to_build_it(capsys, rewritten, tmp_path, monkeypatch):
    monkeypatch.setenv(plugin_lib.ENV_LIBRARY, str(tmp_path / "missing.so"))
    code, _, err = run_cli(capsys, "build", str(rewritten))
    assert_one_line_error(code, err, "TensorRT plugin library not found")
    assert "cmake" in err


@pytest.mark.skipif(HAS_TRT, reason="TensorRT is installed here")
def test_build_without_tensorrt_names_what_to_install(capsys, rewritten, tmp_path, monkeypatch):
    # Only the library's path is discovered before TensorRT is imported; its bytes are never read here.
    library = tmp_path / plugin_lib.LIBRARY_NAME
    library.write_bytes(b"")
    monkeypatch.setenv(plugin_lib.ENV_LIBRARY, str(library))
    code, _, err = run_cli(capsys, "build", str(rewritten), "--max-tokens", "256")
    assert_one_line_error(code, err, "TensorRT's Python package is not importable here")
    assert "pip install 'tensorrt-cu13>=10.14,<11'" in err
    assert not (rewritten / "engine").exists() and not list(rewritten.glob(".engine.*"))
    # --strongly-typed implies --no-fp16: the spec is valid and the build gets as far as TensorRT.
    code, _, err = run_cli(capsys, "build", str(rewritten), "--strongly-typed")
    assert_one_line_error(code, err, "TensorRT's Python package is not importable here")


@pytest.mark.parametrize(("argv", "fragment"), [
    (["--exclude-lean-runtime"], "--exclude-lean-runtime needs --version-compatible"),
    (["--max-tokens", "8", "--opt-tokens", "9"], "opt_tokens must lie in 1..max_tokens (8)"),
    (["--max-batch", "0"], "argument --max-batch: must be at least 1 (got 0)"),
])
def test_build_arguments_are_checked_first(capsys, rewritten, argv, fragment):
    code, _, err = run_cli(capsys, "build", str(rewritten), *argv)
    assert_one_line_error(code, err, fragment)


def test_build_refuses_an_existing_engine_folder_before_tensorrt(capsys, rewritten, tmp_path, monkeypatch):
    library = tmp_path / plugin_lib.LIBRARY_NAME
    library.write_bytes(b"")
    monkeypatch.setenv(plugin_lib.ENV_LIBRARY, str(library))
    (tmp_path / "engine").mkdir()
    code, _, err = run_cli(capsys, "build", str(rewritten), "-o", str(tmp_path / "engine"))
    assert_one_line_error(code, err, "already exists and freeact-export did not write it")


def test_build_of_a_folder_that_is_not_rewritten(capsys, tmp_path):
    code, _, err = run_cli(capsys, "build", str(tmp_path))
    assert_one_line_error(code, err, "is not a folder written by 'freeact-export MODEL.onnx'")


# The commands that read each file before anything else fails (bundle needs an engine first, triton
# without --engine serves only the portable graph).
READERS = {"plugin.onnx": ("check", "build"), "portable.onnx": ("check", "triton"),
           "report.json": ("check", "triton", "build", "bundle"),
           "plan/plan.safetensors": ("check", "triton", "build", "bundle")}


@pytest.mark.parametrize("name", READERS)
def test_a_damaged_folder_is_one_line_for_every_command(capsys, rewritten, tmp_path, name):
    folder = tmp_path / "damaged"
    shutil.copytree(rewritten, folder)
    (folder / name).write_bytes(b"" if name == "portable.onnx" else b"\x08\x07garbage" * 10)
    # Sealed again, as if written damaged: the readers' own handling is what is tested here (a file
    # changed after writing is refused by the manifest first: test_manifest.py).
    manifest.write(folder, manifest.REWRITTEN_KIND, manifest.read(folder, manifest.REWRITTEN_KIND)["model"])
    for command in READERS[name]:
        output = [] if command == "check" else ["-o", str(tmp_path / "out")]
        code, _, err = run_cli(capsys, command, str(folder), *output)
        assert_one_line_error(code, err, "write the folder again with 'freeact-export MODEL.onnx -o DIR'")
    assert [p.name for p in tmp_path.iterdir()] == ["damaged"]


def test_no_gpu_is_one_clear_line():
    try:
        facts = gpu_facts()
    except UserError as err:
        assert str(err).startswith("building and running TensorRT engines needs an NVIDIA GPU: ")
    else:
        pytest.skip(f"this machine has a GPU ({facts['gpu']})")


def test_check_records_why_tensorrt_was_skipped(rewritten, tiny_text_file, tmp_path):
    record = check(rewritten, corpus=str(tiny_text_file), eval_spec=None, progress=False)
    assert record["tensorrt"] == f"skipped: no engine at {rewritten / 'engine' / 'model.plan'} " \
                                 f"(build one with 'freeact-export build {rewritten}')"
    assert record["runners"] == ["simulation", "plugin", "portable"] and record["passed"]
    assert '"tensorrt": "skipped: ' in (rewritten / "check" / "check.json").read_text()
    # An engine named explicitly is compared or refused, never quietly skipped for being absent.
    with pytest.raises(UserError, match=f"the engine {tmp_path / 'none'} \\(--engine\\) does not exist"):
        check(rewritten, corpus=str(tiny_text_file), eval_spec=None, progress=False, engine=tmp_path / "none")
