"""`freeact-export triton`: the repository's configs (Triton's own protobuf), layout, bad input, and a real server.

The serving test starts the tritonserver binary of the nvidia-pytriton wheel on loopback with
the repository of a tiny rewritten model, queries it over HTTP and gRPC, and compares what it
returns with a local ONNX Runtime run of the portable graph. The repository lies under a path
with a space and a non-ASCII letter, which the server's Python backend cannot take as it is.
"""

import hashlib
import json
import os
import re
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import text_format

from freeact_export import api
from freeact_export.api import rewrite_onnx
from freeact_export.config import CalibSpec, ExportSpec, FreeActSpec
from freeact_export.deploy import triton as repo_writer
from freeact_export.errors import UserError
from freeact_export.files import MARKER
from freeact_export.rewrite import folder as rewritten_folder
from freeact_export.runtime.ort_lm import OrtLogits
from test_cli import assert_one_line_error, run_cli
from tiny_models import save_tiny_model

try:  # tritonclient.grpc raises RuntimeError, not ImportError, where grpc is missing
    from tritonclient.grpc import model_config_pb2
except (ImportError, RuntimeError) as err:
    pytest.skip(f"tritonclient with grpc is not installed (tools/setup.sh installs it): {err}",
                allow_module_level=True)

CALIB = CalibSpec(windows=4, seqlen=48, samples_per_type=40, min_tokens=4)
TEXT_MODELS = {"freeact_tokenize", "freeact_greedy", "freeact_lm", "freeact_generate"}
# A space splits the Python backend's unquoted stub command line; é fails its stub's ASCII file names.
AWKWARD_NAME = "my models é"


@pytest.fixture(scope="module")
def rewritten(tmp_path_factory, tiny_text_file):
    """A tiny Qwen2 with KV-cache inputs, rewritten, its graphs' weights in external data files."""
    root = tmp_path_factory.mktemp("triton")
    hf = save_tiny_model("qwen2", root / "qwen2-hf")
    api.export(str(hf), root / "qwen2-onnx", ExportSpec(kv_cache=True, external_data="never", verify=False))
    out = root / "rewritten"
    # Large models keep their weights in portable.onnx.data: the repository must carry that file.
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(rewritten_folder, "_EXTERNAL_DATA_THRESHOLD_BYTES", 0)
        rewrite_onnx(str(root / "qwen2-onnx"), out, corpus=str(tiny_text_file), method="freeact", bits="w4a4",
                     types="sink=pos:3", calib=CALIB, freeact=FreeActSpec(steps=6), progress=False)
    assert json.loads((out / "report.json").read_text())["files"]["portable.onnx"] == [
        "portable.onnx", "portable.onnx.data"]
    return out


@pytest.fixture(scope="module")
def repository(rewritten, tmp_path_factory):
    repo = tmp_path_factory.mktemp("repo") / AWKWARD_NAME
    record = api.triton(rewritten, repo, max_batch=4, instances=1, max_tokens=64, max_new_tokens=4)
    return repo, record


def _config(repo, name):
    return text_format.Parse((repo / name / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())


def test_repository_layout_and_configs(repository):
    repo, record = repository
    assert set(record["models"]) == {"freeact_lm_onnx", *TEXT_MODELS}
    assert "--engine" in record["skipped"]["freeact_lm_trt"]
    assert sorted(p.name for p in repo.iterdir() if p.name != MARKER) == sorted(record["models"])
    configs = repo_writer.validate_repository(repo)
    assert set(configs) == set(record["models"])

    lm = _config(repo, "freeact_lm_onnx")
    assert lm.backend == "python" and lm.max_batch_size == 4 and lm.HasField("dynamic_batching")
    assert [(g.kind, g.count) for g in lm.instance_group] == [(model_config_pb2.ModelInstanceGroup.KIND_CPU, 1)]
    assert [(t.name, list(t.dims), t.optional) for t in lm.input] == [("input_ids", [-1], False),
                                                                      ("attention_mask", [-1], True)]
    assert [(t.name, t.data_type, list(t.dims)) for t in lm.output] == [("logits", model_config_pb2.TYPE_FP32,
                                                                         [-1, 384])]
    assert lm.parameters["max_tokens"].string_value == "64"
    assert sorted(p.name for p in (repo / "freeact_lm_onnx" / "1").iterdir()) == [
        "model.py", "portable.onnx", "portable.onnx.data"]

    ensemble = _config(repo, "freeact_lm")
    assert ensemble.platform == "ensemble" and (repo / "freeact_lm" / "1").is_dir()
    assert [s.model_name for s in ensemble.ensemble_scheduling.step] == [
        "freeact_tokenize", "freeact_lm_onnx", "freeact_greedy"]
    generate = _config(repo, "freeact_generate")
    assert generate.parameters["lm_model"].string_value == "freeact_lm_onnx"
    assert generate.parameters["eos_token_ids"].string_value == "2"
    for name in ("freeact_tokenize", "freeact_greedy", "freeact_generate"):
        assert (repo / name / "1" / "tokenizer.json").is_file()
        compile((repo / name / "1" / "model.py").read_text(), name, "exec")
    # Written by printing the protobuf: parsing and printing again gives the same text.
    for name in record["models"]:
        text = (repo / name / "config.pbtxt").read_text()
        assert text_format.MessageToString(_config(repo, name)) == text


def test_tensorrt_plan_model_with_an_engine_file(rewritten, tmp_path):
    # No TensorRT here: the engine and library are stand-in files; what is checked is the config
    # (tensors of the plugin graph, batch dimension dropped) and the layout around them.
    engine, plugin = tmp_path / "model.plan", tmp_path / "libfreeact_trt_plugins.so"
    engine.write_bytes(b"engine")
    plugin.write_bytes(b"library")
    record = api.triton(rewritten, tmp_path / "repo", engine=engine, plugin=plugin, max_batch=2, instances=3)
    assert "freeact_lm_trt" in record["models"] and not record["skipped"]
    folder = tmp_path / "repo" / "freeact_lm_trt"
    config = _config(tmp_path / "repo", "freeact_lm_trt")
    assert config.platform == "tensorrt_plan" and config.max_batch_size == 2
    assert [(g.kind, g.count) for g in config.instance_group] == [(model_config_pb2.ModelInstanceGroup.KIND_GPU, 3)]
    inputs = {t.name: list(t.dims) for t in config.input}
    assert inputs["input_ids"] == [-1] and inputs["attention_mask"] == [-1]
    assert inputs["past_key_values.0.key"] == [2, -1, 16]  # [kv heads, past, head size]
    assert {t.name for t in config.output} >= {"logits", "present.0.key"}
    assert (folder / "1" / "model.plan").read_bytes() == b"engine"
    assert (folder / plugin.name).read_bytes() == b"library"
    load = (folder / "LOAD.md").read_text()
    assert f"--backend-config=tensorrt,plugins=/models/freeact_lm_trt/{plugin.name}" in load and "LD_PRELOAD" in load


def _engine_folder(folder, rewritten, plugin):
    """An engine folder laid out as 'freeact-export build' writes it, with stand-in bytes (no TensorRT
    here) and every key of its build.json that bundle, triton and check read."""
    plugin.write_bytes(b"library")
    folder.mkdir()
    (folder / "model.plan").write_bytes(b"engine")
    record = {"tensorrt": {"version": "10.14.1.48", "fp16": True, "version_compatible": False,
                           "exclude_lean_runtime": False},
              "cuda": {"major": 12, "driver": "12.6"},
              "gpu": {"name": "Orin", "compute_capability": "8.7", "sm": "sm_87"},
              "profile": {"input_ids": {"min": [1, 1], "opt": [1, 32], "max": [1, 64]}},
              "plugin_library": {"path": str(plugin), "sha256": hashlib.sha256(b"library").hexdigest()},
              "plugin_graph_sha256": hashlib.sha256((rewritten / "plugin.onnx").read_bytes()).hexdigest()}
    (folder / "build.json").write_text(json.dumps(record))
    return record


def test_engine_folder_from_build_is_found_and_its_library_checked(rewritten, tmp_path):
    # The library is the one whose sha256 the build record holds, and a different one is refused.
    plugin, engine_dir = tmp_path / "libfreeact_trt_plugins.so", tmp_path / "engine"
    record = _engine_folder(engine_dir, rewritten, plugin)
    written = api.triton(rewritten, tmp_path / "repo", engine=engine_dir)
    folder = tmp_path / "repo" / "freeact_lm_trt"
    assert "freeact_lm_trt" in written["models"]
    assert (folder / plugin.name).read_bytes() == b"library" and (folder / "1" / "model.plan").read_bytes() == b"engine"
    assert json.loads((folder / "build.json").read_text()) == record

    plugin.write_bytes(b"another build")
    with pytest.raises(UserError, match="the plugin library the engine was built with"):
        api.triton(rewritten, tmp_path / "repo2", engine=engine_dir)
    assert not (tmp_path / "repo2").exists()


def test_incomplete_build_record_is_one_line(capsys, rewritten, tmp_path):
    engine_dir = tmp_path / "engine"
    record = _engine_folder(engine_dir, rewritten, tmp_path / "libfreeact_trt_plugins.so")
    del record["plugin_library"]["sha256"]
    (engine_dir / "build.json").write_text(json.dumps(record))
    code, _, err = run_cli(capsys, "triton", str(rewritten), "-o", str(tmp_path / "r"), "--engine", str(engine_dir))
    assert_one_line_error(code, err, f"{engine_dir / 'build.json'} lacks 'plugin_library.sha256'")
    assert "freeact-export build DIR --overwrite" in err and not (tmp_path / "r").exists()
    (engine_dir / "build.json").write_text('{"tensorrt": ')
    code, _, err = run_cli(capsys, "triton", str(rewritten), "-o", str(tmp_path / "r"), "--engine", str(engine_dir))
    assert_one_line_error(code, err, f"{engine_dir / 'build.json'} is not valid JSON")
    assert not (tmp_path / "r").exists()


def test_tritonclient_without_grpc_is_one_line(capsys, monkeypatch, rewritten, tmp_path):
    # As after 'pip install tritonclient' without [grpc]: tritonclient.grpc's import of grpc fails.
    # The loaded model_config_pb2 stays in sys.modules: only the package is imported again.
    monkeypatch.setitem(sys.modules, "grpc", None)
    monkeypatch.delitem(sys.modules, "tritonclient.grpc")
    code, _, err = run_cli(capsys, "triton", str(rewritten), "-o", str(tmp_path / "r"))
    assert_one_line_error(code, err, "tritonclient is installed without its grpc support")
    assert "pip install grpcio" in err and not (tmp_path / "r").exists()


def test_validation_catches_what_triton_would_refuse(repository, tmp_path):
    repo = tmp_path / "copy"
    shutil.copytree(repository[0], repo)
    config = _config(repo, "freeact_lm")
    config.ensemble_scheduling.step[1].model_name = "freeact_missing"
    (repo / "freeact_lm" / "config.pbtxt").write_text(text_format.MessageToString(config))
    with pytest.raises(UserError, match="'freeact_missing' is not in the repository"):
        repo_writer.validate_repository(repo)
    (repo / "freeact_lm" / "config.pbtxt").write_text('name: "freeact_lm"\nplatform: "ensemble"\nbogus: 1\n')
    with pytest.raises(UserError, match="not a Triton model config"):
        repo_writer.validate_repository(repo)
    shutil.rmtree(repo / "freeact_lm")
    (repo / "freeact_greedy" / "1" / "model.py").unlink()
    with pytest.raises(UserError, match="version 1/ has no model.py"):
        repo_writer.validate_repository(repo)


def test_bad_input_is_one_line(capsys, rewritten, repository, tmp_path):
    code, _, err = run_cli(capsys, "triton", str(tmp_path), "-o", str(tmp_path / "r"))
    assert_one_line_error(code, err, "is not a folder written by 'freeact-export MODEL.onnx'")
    code, _, err = run_cli(capsys, "triton", str(rewritten), "-o", str(repository[0]))
    assert_one_line_error(code, err, "already exists; choose another path or pass --overwrite")
    code, _, err = run_cli(capsys, "triton", str(rewritten), "-o", str(tmp_path / "r"), "--engine", "nope.plan")
    assert_one_line_error(code, err, "--engine nope.plan: no such file")
    code, _, err = run_cli(capsys, "triton", str(rewritten), "-o", str(tmp_path / "r"), "--plugin-lib", "x.so")
    assert_one_line_error(code, err, "--plugin-lib goes with --engine")
    code, _, err = run_cli(capsys, "triton", str(rewritten), "-o", str(tmp_path / "r"), "--max-batch", "0")
    assert_one_line_error(code, err, "argument --max-batch: must be at least 1")
    assert not (tmp_path / "r").exists()


def test_cli_writes_and_notes_the_skipped_engine(capsys, rewritten, tmp_path):
    code, out, _ = run_cli(capsys, "triton", str(rewritten), "-o", str(tmp_path / "r"))
    assert code == 0
    assert "note: freeact_lm_trt skipped: no --engine given" in out
    assert "wrote " in out and "freeact_lm_onnx" in out
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]


# --- the real server --------------------------------------------------------------------------------------------


def _local_greedy(runner, ids, steps, eos):
    generated = []
    for _ in range(steps):
        token = int(runner(np.array([ids + generated]))[0, -1].argmax())
        generated.append(token)
        if token in eos:
            break
    return generated


def require_local_server():
    """Skip, with the reason, where the nvidia-pytriton tritonserver or the stub's numpy is missing."""
    from freeact_export.deploy import triton_server

    try:
        triton_server.tritonserver_binary()
        triton_server.stub_packages()
    except UserError as err:
        pytest.skip(f"no local Triton server: {err}")


@pytest.fixture
def server(repository, tmp_path):
    from freeact_export.deploy import triton_server

    require_local_server()
    try:
        with triton_server.running_server(repository[0], tmp_path / "server", timeout_s=60) as running:
            yield running
    except UserError as err:
        if "error while loading shared libraries" in str(err):
            pytest.skip(f"tritonserver cannot start here: {err}")
        raise
    # The process group is gone: no server, no Python stubs left behind.
    with pytest.raises(ProcessLookupError):
        os.killpg(running["pid"], 0)
    # The server was given a link with a safe name in place of the awkward path; the link is gone.
    assert triton_server.is_safe_path(running["repository"]) and not triton_server.is_safe_path(repository[0])
    assert not running["repository"].parent.exists()


@pytest.mark.triton_server
def test_real_triton_server_serves_what_onnx_runtime_computes(server, rewritten):
    import tritonclient.grpc as grpc
    import tritonclient.http as http
    from tokenizers import Tokenizer

    start = time.perf_counter()
    local = OrtLogits(rewritten / "portable.onnx")
    tokenizer = Tokenizer.from_file(str(rewritten / "tokenizer.json"))
    text = "the cat sat on the mat and then"
    ids = tokenizer.encode(text).ids
    want = local(np.array([ids])).numpy()

    with http.InferenceServerClient(server["http"], connection_timeout=30, network_timeout=60) as client:
        assert client.is_model_ready("freeact_lm_onnx") and client.is_model_ready("freeact_lm")
        feeds = [http.InferInput("input_ids", [1, len(ids)], "INT64"),
                 http.InferInput("attention_mask", [1, len(ids)], "INT64")]
        feeds[0].set_data_from_numpy(np.array([ids], dtype=np.int64))
        feeds[1].set_data_from_numpy(np.ones((1, len(ids)), dtype=np.int64))
        got = client.infer("freeact_lm_onnx", feeds).as_numpy("logits")
        np.testing.assert_array_equal(got, want)  # same graph, same ORT, same session options

        prompt = http.InferInput("text", [1], "BYTES")
        prompt.set_data_from_numpy(np.array([text.encode()], dtype=np.object_))
        limit = http.InferInput("max_new_tokens", [1], "INT32")
        limit.set_data_from_numpy(np.array([3], dtype=np.int32))
        generated = client.infer("freeact_generate", [prompt, limit])
        assert generated.as_numpy("generated_ids").tolist() == _local_greedy(local, ids, 3, {2})
        assert generated.as_numpy("generated_text")[0].decode() == tokenizer.decode(
            generated.as_numpy("generated_ids").tolist(), skip_special_tokens=True)

        _requests_over_the_limits_get_errors_naming_them(client, http, tokenizer)

    client = grpc.InferenceServerClient(server["grpc"])
    try:
        texts = [text, "a dog"]
        batch = grpc.InferInput("text", [2, 1], "BYTES")
        batch.set_data_from_numpy(np.array([[t.encode()] for t in texts], dtype=np.object_))
        result = client.infer("freeact_lm", [batch], client_timeout=60)
        input_ids, logits = result.as_numpy("input_ids"), result.as_numpy("logits")
        for row, sentence in enumerate(texts):
            row_ids = tokenizer.encode(sentence).ids
            assert input_ids[row, : len(row_ids)].tolist() == row_ids
            row_want = local(np.array([row_ids])).numpy()[0]
            if row == 0:  # the longest text is not padded: exactly the local run
                np.testing.assert_array_equal(logits[row], row_want)
            else:  # padded on the right (mask 0): the real positions agree within float noise
                np.testing.assert_allclose(logits[row, : len(row_ids)], row_want, atol=1e-4, rtol=0)
            assert result.as_numpy("next_token_id")[row, 0] == row_want[-1].argmax()
            next_text = result.as_numpy("next_token")[row, 0].decode()
            assert next_text == tokenizer.decode([int(row_want[-1].argmax())], skip_special_tokens=False)
    finally:
        client.close()
    assert time.perf_counter() - start < 60


def _requests_over_the_limits_get_errors_naming_them(client, http, tokenizer):
    """The repository has --max-tokens 64 and --max-new-tokens 4: each model refuses what exceeds them."""
    from tritonclient.utils import InferenceServerException

    def text_input(value, shape):
        tensor = http.InferInput("text", shape, "BYTES")
        tensor.set_data_from_numpy(np.array([value.encode()], dtype=np.object_).reshape(shape))
        return tensor

    def generate(value, new_tokens=None):
        inputs = [text_input(value, [1])]
        if new_tokens is not None:
            inputs.append(http.InferInput("max_new_tokens", [1], "INT32"))
            inputs[-1].set_data_from_numpy(np.array([new_tokens], dtype=np.int32))
        return client.infer("freeact_generate", inputs)

    limit = re.escape("this model takes at most 64 (the repository's --max-tokens)")
    with pytest.raises(InferenceServerException, match=f"the text is 161 tokens; {limit}"):
        client.infer("freeact_lm", [text_input("the cat " * 40, [1, 1])])  # the ensemble
    with pytest.raises(InferenceServerException, match=f"the text is 161 tokens; {limit}"):
        client.infer("freeact_tokenize", [text_input("the cat " * 40, [1, 1])])
    ids = http.InferInput("input_ids", [1, 65], "INT64")
    ids.set_data_from_numpy(np.ones((1, 65), dtype=np.int64))
    with pytest.raises(InferenceServerException, match=f"65 tokens sent; {limit}") as refused:
        client.infer("freeact_lm_onnx", [ids])
    assert refused.value.status() == "400"  # the client's to fix, not a server fault (500)

    # Generation: the prompt and the generated tokens together must fit the 64.
    prompt = "the cat " * 15 + "sat"
    assert len(tokenizer.encode(prompt).ids) == 62
    with pytest.raises(InferenceServerException, match="the prompt is 62 tokens and max_new_tokens 3: 65 exceeds "
                       "this model's limit of 64 tokens .* ask for at most 2 new tokens"):
        generate(prompt, 3)
    assert len(generate(prompt, 2).as_numpy("generated_ids")) in (1, 2)
    assert len(generate(prompt).as_numpy("generated_ids")) in (1, 2)  # the default cap 4, cut to what fits
    with pytest.raises(InferenceServerException, match="the prompt is 65 tokens; this model takes at most 64") \
            as refused:
        generate("the cat " * 16)
    assert refused.value.status() == "400"
    with pytest.raises(InferenceServerException, match="max_new_tokens 5 exceeds this model's cap of 4 "
                       "\\(the repository's --max-new-tokens\\)"):
        generate("the cat", 5)
    with pytest.raises(InferenceServerException, match="max_new_tokens must be at least 1"):
        generate("the cat", 0)


@pytest.mark.triton_server
def test_serve_command_answers_the_readme_request_and_stops_on_ctrl_c(repository, tmp_path):
    # 'freeact-export serve' as a user runs it: the README's curl request, then Ctrl-C (SIGINT).
    import signal
    import subprocess
    import sys
    import urllib.request

    from freeact_export.deploy import triton_server

    require_local_server()
    http, grpc = triton_server.free_port(), triton_server.free_port()
    command = [sys.executable, "-m", "freeact_export.cli", "serve", str(repository[0]), "--http-port", str(http),
               "--grpc-port", str(grpc), "--workdir", str(tmp_path / "work"), "--timeout", "60"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        lines = []
        while not lines or "Ctrl-C stops it" not in lines[-1]:
            line = process.stdout.readline()
            assert line, f"serve exited early: {process.stderr.read()}"
            lines.append(line)
        request = {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["the cat sat"]},
                              {"name": "max_new_tokens", "shape": [1], "datatype": "INT32", "data": [2]}]}
        body = json.dumps(request).encode()
        url = f"http://127.0.0.1:{http}/v2/models/freeact_generate/infer"
        with urllib.request.urlopen(urllib.request.Request(url, body), timeout=60) as response:
            outputs = {o["name"]: o for o in json.loads(response.read())["outputs"]}
        assert len(outputs["generated_ids"]["data"]) in (1, 2)
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0
        assert "stopping tritonserver" in process.stdout.read()
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    # The server ran in its own process group under serve's: nothing of it is left.
    server_log = (tmp_path / "work" / "tritonserver.log").read_text()
    assert "Started HTTPService" in server_log
    time.sleep(0.5)
    # The server and its stubs name the backend folder in the workdir on their command lines.
    leftover = subprocess.run(["pgrep", "-f", str(tmp_path / "work")], capture_output=True, text=True).stdout.split()
    assert leftover == []
    # It served the awkward path through a link with a safe name (the server logs it), now removed.
    links = set(re.findall(r"(/\S*/freeact-triton-\w+)/repository", server_log))
    assert links and not any(Path(link).exists() for link in links)


def test_serve_refuses_what_it_cannot_serve(capsys, rewritten, tmp_path):
    code, _, err = run_cli(capsys, "serve", str(tmp_path / "nowhere"))
    assert_one_line_error(code, err, "nowhere does not exist; give a repository written by 'freeact-export triton")
    engine, plugin = tmp_path / "model.plan", tmp_path / "libfreeact_trt_plugins.so"
    engine.write_bytes(b"engine")
    plugin.write_bytes(b"library")
    api.triton(rewritten, tmp_path / "repo", engine=engine, plugin=plugin)
    code, _, err = run_cli(capsys, "serve", str(tmp_path / "repo"))
    assert_one_line_error(code, err, "holds freeact_lm_trt (tensorrt_plan), which needs a GPU")


@pytest.mark.triton_server
def test_a_server_that_cannot_start_names_the_reason_from_its_log(capsys, repository, tmp_path):
    from freeact_export.deploy import triton_server

    require_local_server()
    repo = tmp_path / "broken repo é"
    repo.mkdir()
    shutil.copytree(repository[0] / "freeact_tokenize", repo / "freeact_tokenize")
    (repo / "freeact_tokenize" / "1" / "tokenizer.json").write_text("{")
    start = time.perf_counter()
    # A workdir with an awkward path too: the backend folder goes beside the repository's link, and
    # the stub it starts gets as far as the model's own Python error.
    work = tmp_path / "work dir é"
    code, _, err = run_cli(capsys, "serve", str(repo), "--workdir", str(work), "--timeout", "60",
                           "--http-port", str(triton_server.free_port()), "--grpc-port",
                           str(triton_server.free_port()))
    # The model's own error, not the CPU-only "CudaDriverHelper" line the log also holds as an error.
    assert_one_line_error(code, err, "tritonserver exited with status 1: failed to load 'freeact_tokenize' "
                                     "version 1: Internal: Exception: EOF while parsing")
    assert "CudaDriverHelper" not in err and "more failed" not in err
    assert str(work / "tritonserver.log") in err
    assert time.perf_counter() - start < 30


def test_log_reason_skips_cpu_noise_and_names_a_crashed_stub(tmp_path):
    # Lines as tritonserver 2.51 wrote them when a space in the repository's path split the stub's
    # command line, and when the stub's ASCII file names met an é (before serving through links).
    from freeact_export.deploy.triton_server import log_reason

    noise = ('W1207 08:59:16.108470 3687 pinned_memory_manager.cc:273] "Unable to allocate pinned system memory, '
             'pinned memory pool will not be available: CUDA driver version is insufficient for CUDA runtime '
             'version"\nE1207 08:59:16.108719 3687 server.cc:241] "CudaDriverHelper has not been initialized."\n'
             'I1207 08:59:16.109975 3687 model_lifecycle.cc:472] "loading: freeact_lm_onnx:1"\n')
    log = tmp_path / "tritonserver.log"
    log.write_text(noise)
    assert log_reason(log) is None
    log.write_text(noise + "terminate called after throwing an instance of 'std::invalid_argument'\n  what():  stol\n")
    assert log_reason(log, crashes_only=True) == (
        "a Python backend stub crashed (terminate called after throwing an instance of 'std::invalid_argument', "
        "what():  stol)")
    failed = ('E1207 08:59:56.347704 3828 model_lifecycle.cc:642] "failed to load \'{}\' version 1: Internal: '
              'UnicodeEncodeError: \'ascii\' codec can\'t encode character \'\\\\xe9\' in position 18: ordinal '
              'not in range(128)\\n\\nAt:\\n  <frozen importlib._bootstrap_external>(147): _path_stat"\n')
    log.write_text(noise + failed.format("freeact_lm_onnx") + failed.format("freeact_tokenize")
                   + "error: creating server: Internal - failed to load all models\n")
    assert log_reason(log, crashes_only=True) is None
    assert log_reason(log) == ("failed to load 'freeact_lm_onnx' version 1: Internal: UnicodeEncodeError: 'ascii' "
                               "codec can't encode character '\\\\xe9' in position 18: ordinal not in range(128) "
                               "(1 more failed to load)")
