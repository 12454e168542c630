"""Bad input, as a hostile new user gives it, to every command: exactly one line on stderr that names
the problem, a non-zero exit (2 for a usage error the parser refuses, 1 otherwise), no traceback,
and nothing left where outputs go (no partial, no new file, no changed input).

Most cases run the CLI in this process through freeact_export.cli.main; a few run the installed
entry point as a real process (a usage error, a write the system refuses mid-run, an unreadable
input, a folder the user cannot write). Every path below has a space in it. Cases that need a
read-only or a full file system mount a small tmpfs (as root) or use permissions (as a user), and
are skipped where neither is possible.

The table: command, what is wrong, command line ({name} = a fixture path), exit status, a fragment
the one error line must hold.
"""

from __future__ import annotations

import contextlib
import os
import re
import resource
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from rewritten_tiny import rewritten_tiny

from freeact_export import api
from freeact_export.config import CalibSpec
from test_cli import assert_one_line_error, run_cli

CASES = [
    # command, what is wrong, command line, exit status, expected fragment
    ("-", "no command", "", 2, "the following arguments are required: COMMAND"),
    ("-", "a misspelt command", "evall --model {hf}", 2, "unknown command 'evall'"),
    ("-", "a misspelt option", "eval --model {hf} --corpus {corpus} --windoes 2", 2,
     "unrecognized arguments: --windoes"),
    # eval
    ("eval", "window length not a number", "eval --model {hf} --corpus {corpus} --seqlen abc", 2,
     "argument --seqlen: 'abc' is not a whole number"),
    ("eval", "window length 1", "eval --model {hf} --corpus {corpus} --seqlen 1", 2,
     "argument --seqlen: must be at least 2"),
    ("eval", "window length beyond the model's context", "eval --model {hf} --corpus {corpus} --seqlen 600", 1,
     "eval windows of 600 tokens exceed the model's context of 512 tokens"),
    ("eval", "no windows", "eval --model {hf} --corpus {corpus} --windows 0", 2,
     "argument --windows: must be at least 1 (got 0)"),
    ("eval", "negative windows", "eval --model {hf} --corpus {corpus} --windows -3", 2,
     "argument --windows: must be at least 1 (got -3)"),
    ("eval", "unknown dtype", "eval --model {hf} --corpus {corpus} --dtype int8", 2,
     "argument --dtype: invalid choice: 'int8'"),
    ("eval", "unknown device", "eval --model {hf} --corpus {corpus} --device tpu", 2,
     "argument --device: invalid choice: 'tpu'"),
    ("eval", "model path missing", "eval --model {out}/missing --corpus {corpus}", 1,
     "model path {out}/missing does not exist"),
    ("eval", "model: an empty folder", "eval --model {emptydir} --corpus {corpus}", 1,
     "holds neither a Hugging Face model (config.json) nor model.onnx"),
    ("eval", "model: a text file", "eval --model {text} --corpus {corpus}", 1, "is neither .gguf nor .onnx"),
    ("eval", "model: corrupt config.json", "eval --model {badcfg} --corpus {corpus}", 1,
     "is not a valid JSON file"),
    ("eval", "model: empty weights file", "eval --model {emptyweights} --corpus {corpus} --seqlen 32", 1,
     "cannot load a causal LM from {emptyweights}"),
    ("eval", "model: truncated ONNX", "eval --model {trunc_onnx} --tokenizer {hf} --corpus {corpus} --seqlen 32", 1,
     "ONNX Runtime cannot load {trunc_onnx}"),
    ("eval", "model: empty GGUF", "eval --model {empty_gguf} --corpus {corpus}", 1,
     "cannot read GGUF file {empty_gguf}"),
    ("eval", "ONNX model without a tokenizer", "eval --model {bare_onnx} --corpus {corpus} --seqlen 32", 1,
     "pass --tokenizer"),
    ("eval", "tokenizer path missing", "eval --model {hf} --tokenizer {out}/tok --corpus {corpus}", 1,
     "model path {out}/tok does not exist"),
    ("eval", "corpus missing", "eval --model {hf} --corpus '{out}/my corpus.txt'", 1,
     "corpus file {out}/my corpus.txt does not exist"),
    ("eval", "corpus: a folder", "eval --model {hf} --corpus {emptydir}", 1, "corpus {emptydir} is a folder"),
    ("eval", "corpus: not UTF-8", "eval --model {hf} --corpus {binary}", 1, "is not UTF-8 text"),
    ("eval", "corpus: empty", "eval --model {hf} --corpus {empty_txt}", 1, "is empty"),
    ("eval", "corpus: unknown name", "eval --model {hf} --corpus wikipedia", 1, "unknown corpus 'wikipedia'"),
    ("eval", "corpus shorter than one window", "eval --model {hf} --corpus {short} --seqlen 256", 1,
     "fewer than one window of seqlen 256"),
    ("eval", "--json in a missing folder", "eval --model {hf} --corpus {corpus} --json {out}/no/ppl.json", 1,
     "the folder {out}/no for output {out}/no/ppl.json does not exist"),
    ("eval", "--json inside a file", "eval --model {hf} --corpus {corpus} --json {text}/ppl.json", 1,
     "{text} is a file, so output {text}/ppl.json cannot be made inside it"),
    ("eval", "--json in a read-only folder", "eval --model {hf} --corpus {corpus} --json {ro}/ppl.json", 1,
     "cannot write in {ro}"),
    ("eval", "--json on a full disk", "eval --model {hf} --corpus {corpus} --json {full}/ppl.json", 1,
     "{full} is full (0 bytes free)"),
    ("eval", "--plan: a file", "eval --model {hf} --corpus {corpus} --plan {text}", 1,
     "{text} is a file, not a folder; give a plan folder"),
    ("eval", "--plan: a model folder", "eval --model {hf} --corpus {corpus} --plan {hf}", 1,
     "{hf} holds no plan.json"),
    ("eval", "--plan with an ONNX model", "eval --model {onnx} --corpus {corpus} --plan {plan}", 1,
     "--plan runs on a PyTorch model"),
    ("eval", "--runtime kernels without --plan", "eval --model {hf} --runtime kernels", 1, "give --plan DIR"),
    # export
    ("export", "no -o", "export --model {hf}", 2, "the following arguments are required: -o/--output"),
    ("export", "-o names a file", "export --model {hf} -o {out}/model.onnx", 1, "-o names the export folder"),
    ("export", "opset beyond what onnx knows", "export --model {hf} -o {out}/x --opset 99", 1,
     "opset must lie in 18.."),
    ("export", "opset below INT4's", "export --model {hf} -o {out}/x --opset 17", 1, "opset must lie in 18.."),
    ("export", "opset not a number", "export --model {hf} -o {out}/x --opset v21", 2,
     "argument --opset: 'v21' is not a whole number"),
    ("export", "unknown external-data choice", "export --model {hf} -o {out}/x --external-data sometimes", 2,
     "argument --external-data: invalid choice"),
    ("export", "model is ONNX already", "export --model {onnx} -o {out}/x", 1, "is already ONNX"),
    ("export", "unknown model name", "export --model llama-7b -o {out}/x", 1, "unknown model 'llama-7b'"),
    ("export", "-o inside a file", "export --model {hf} -o {text}/x", 1, "{text} is a file"),
    ("export", "-o in a read-only folder", "export --model {hf} -o {ro}/x", 1, "cannot write in {ro}"),
    ("export", "-o on a full disk", "export --model {hf} -o {full}/x", 1, "{full} is full"),
    ("export", "-o on a disk too small for the weights", "export --model {hf} -o {small}/x", 1,
     "free, and about 394.5 KB is needed for the export (the model's weights in float32, 98,624 parameters)"),
    # quantize
    ("quantize", "negative steps", "quantize --model {hf} --corpus {corpus} --steps -5", 2,
     "argument --steps: must be at least 1 (got -5)"),
    ("quantize", "no steps", "quantize --model {hf} --corpus {corpus} --steps 0", 2,
     "argument --steps: must be at least 1 (got 0)"),
    ("quantize", "fractional steps", "quantize --model {hf} --corpus {corpus} --steps 2.5", 2,
     "argument --steps: '2.5' is not a whole number"),
    ("quantize", "no calibration windows", "quantize --model {hf} --corpus {corpus} --calib-windows 0", 2,
     "argument --calib-windows: must be at least 1"),
    ("quantize", "calibration windows beyond the context",
     "quantize --model {hf} --corpus {corpus} --calib-seqlen 1000 --no-eval", 1,
     "calibration windows of 1000 tokens exceed the model's context of 512 tokens"),
    ("quantize", "eval windows beyond the context", "quantize --model {hf} --corpus {corpus} --seqlen 4096", 1,
     "eval windows of 4096 tokens exceed the model's context"),
    ("quantize", "gpu preset on a 512-token model", "quantize --model {hf} --corpus {corpus} --preset gpu --no-eval",
     1, "calibration windows of 1024 tokens exceed"),
    ("quantize", "type rule on a missing input",
     "quantize --model {hf} --corpus {corpus} --types v=input:pixel_mask --seqlen 64", 1,
     "token-type rule 'v=input:pixel_mask' needs the model input 'pixel_mask'"),
    ("quantize", "type rule selecting nothing", "quantize --model {hf} --corpus {corpus} --types sink=pos:0", 1,
     "selects no token"),
    ("quantize", "type rule garbled", "quantize --model {hf} --corpus {corpus} --types garbage", 1,
     "token-type rule 'garbage' is not name=ids"),
    ("quantize", "type ids not numbers", "quantize --model {hf} --corpus {corpus} --types a=ids:x", 1,
     "needs integers after 'ids:'"),
    ("quantize", "type named twice", "quantize --model {hf} --corpus {corpus} --types 'sink=pos:1;sink=pos:2'", 1,
     "token-type name 'sink' is used twice"),
    ("quantize", "--checkpoint names a file", "quantize --model {hf} --corpus {corpus} --checkpoint {text}", 1,
     "checkpoint {text} is a file"),
    ("quantize", "--steps with a method that learns nothing",
     "quantize --model {hf} --corpus {corpus} --method rtn --steps 5", 1,
     "--steps applies to the learned methods"),
    ("quantize", "--checkpoint with a method that learns nothing",
     "quantize --model {hf} --corpus {corpus} --method quarot+gptq --checkpoint {out}/ck", 1,
     "--checkpoint applies to the learned methods"),
    ("quantize", "unknown method", "quantize --model {hf} --corpus {corpus} --method freeact2", 2,
     "argument --method: invalid choice: 'freeact2'"),
    ("quantize", "unknown bits", "quantize --model {hf} --corpus {corpus} --bits w3a3", 2,
     "argument --bits: invalid choice: 'w3a3'"),
    ("quantize", "dedicated fraction out of range",
     "quantize --model {hf} --corpus {corpus} --dedicated-fraction 0.7", 1, "dedicated_fraction must be in [0, 0.5)"),
    ("quantize", "dedicated fraction not a number",
     "quantize --model {hf} --corpus {corpus} --dedicated-fraction half", 2, "invalid float value: 'half'"),
    ("quantize", "negative seed", "quantize --model {hf} --corpus {corpus} --seed -1", 2,
     "argument --seed: must be at least 0"),
    ("quantize", "--act-order without GPTQ", "quantize --model {hf} --corpus {corpus} --method quarot --act-order", 1,
     "--act-order orders GPTQ's columns and --method quarot rounds without GPTQ"),
    ("quantize", "--group-size at w4a4", "quantize --model {hf} --corpus {corpus} --group-size 32", 1,
     "--group-size applies to --bits w4a16"),
    ("quantize", "odd group size", "quantize --model {hf} --corpus {corpus} --bits w4a16 --group-size 3", 2,
     "must be even"),
    ("quantize", "group size that divides no input",
     "quantize --model {hf} --corpus {corpus} --method rtn --bits w4a16 --group-size 48 --no-eval --calib-seqlen 48", 1,
     "group size 48 does not divide an input of 64 features"),
    ("quantize", "an ONNX model", "quantize --model {onnx} --corpus {corpus}", 1, "quantize it with 'freeact-export"),
    ("quantize", "-o in a read-only folder", "quantize --model {hf} --corpus {corpus} -o {ro}/plan", 1,
     "cannot write in {ro}"),
    ("quantize", "-o on a full disk", "quantize --model {hf} --corpus {corpus} -o {full}/plan", 1, "{full} is full"),
    ("quantize", "-o on a disk too small for the plan",
     "quantize --model {hf} --corpus {corpus} --method rtn --no-eval --calib-seqlen 48 -o {small}/plan", 1,
     "free, and about 98.3 KB is needed for the plan (a byte per linear weight)"),
    # freeact-export MODEL.onnx
    ("MODEL.onnx", "model missing", "{out}/model.onnx", 1, "model path {out}/model.onnx does not exist"),
    ("MODEL.onnx", "a PyTorch model", "{hf} --corpus {corpus}", 1, "is not an ONNX model; export it first"),
    ("MODEL.onnx", "an empty .onnx", "{empty_onnx} --corpus {corpus}", 1, "holds no graph"),
    ("MODEL.onnx", "a truncated .onnx", "{trunc_onnx} --tokenizer {hf} --corpus {corpus}", 1,
     "is not a readable ONNX model"),
    ("MODEL.onnx", "no tokenizer beside it", "{bare_onnx} --corpus {corpus} -o {out}/q", 1, "pass --tokenizer"),
    ("MODEL.onnx", "type rule on a missing graph input", "{onnx} --corpus {corpus} --types v=input:vision_mask", 1,
     "needs the graph input 'vision_mask', which this graph does not have"),
    ("MODEL.onnx", "calibration windows beyond the context", "{onnx} --corpus {corpus} --calib-seqlen 700", 1,
     "calibration windows of 700 tokens exceed the model's context of 512 tokens"),
    ("MODEL.onnx", "no steps", "{onnx} --corpus {corpus} --steps 0", 2, "argument --steps: must be at least 1"),
    ("MODEL.onnx", "--checkpoint names a file", "{onnx} --corpus {corpus} --checkpoint {text}", 1,
     "checkpoint {text} is a file"),
    ("MODEL.onnx", "--steps with rtn", "{onnx} --corpus {corpus} --method rtn --steps 3", 1,
     "--steps applies to the learned methods"),
    ("MODEL.onnx", "unknown bits", "{onnx} --bits int4", 2, "argument --bits: invalid choice: 'int4'"),
    ("MODEL.onnx", "-o in a read-only folder", "{onnx} --corpus {corpus} -o {ro}/q", 1, "cannot write in {ro}"),
    ("MODEL.onnx", "-o on a disk too small for the graphs", "{onnx} --corpus {corpus} -o {small}/q", 1,
     "is needed for the two rewritten graphs (estimated as the input graph's size)"),
    # check
    ("check", "folder missing", "check '{out}/my model'", 1,
     "{out}/my model does not exist; give a folder written by 'freeact-export MODEL.onnx'"),
    ("check", "a file", "check {text}", 1, "{text} is a file, not a folder"),
    ("check", "a plan folder", "check {plan}", 1, "is not a folder written by 'freeact-export MODEL.onnx'"),
    ("check", "no windows", "check {rw} --windows 0", 2, "argument --windows: must be at least 1"),
    ("check", "--engine missing", "check {rw} --engine {out}/engine", 1,
     "the engine {out}/engine (--engine) does not exist"),
    ("check", "a read-only folder", "check {ro}/rw --no-eval", 1, "cannot write in {ro}/rw"),
    # build
    ("build", "no tokens", "build {rw} --max-tokens 0", 2, "argument --max-tokens: must be at least 1"),
    ("build", "negative batch", "build {rw} --max-batch -1", 2, "argument --max-batch: must be at least 1"),
    ("build", "negative past", "build {rw} --max-past -1", 2, "argument --max-past: must be at least 0"),
    ("build", "opt tokens above max tokens", "build {rw} --max-tokens 64 --opt-tokens 128", 1,
     "opt_tokens must lie in 1..max_tokens (64)"),
    ("build", "lean runtime flag without version compatibility", "build {rw} --exclude-lean-runtime", 1,
     "--exclude-lean-runtime needs --version-compatible"),
    ("build", "folder missing", "build {out}/rw", 1, "{out}/rw does not exist"),
    ("build", "a plan folder", "build {plan}", 1, "is not a folder written by 'freeact-export MODEL.onnx'"),
    ("build", "plugin library missing", "build {rw} --plugin-library {out}/lib.so", 1,
     "plugin library {out}/lib.so does not exist"),
    ("build", "-o inside a file", "build {rw} -o {text}/engine", 1, "{text} is a file"),
    # bundle
    ("bundle", "no -o", "bundle {rw}", 2, "the following arguments are required: -o/--output"),
    ("bundle", "no engine built", "bundle {rw} -o {out}/b", 1, "no TensorRT engine in {rw}/engine"),
    ("bundle", "--engine is a text file", "bundle {rw} -o {out}/b --engine {text}", 1, "no TensorRT engine in {text}"),
    ("bundle", "incomplete build.json", "bundle {rw} -o {out}/b --engine {engine_incomplete}", 1,
     "build.json lacks 'tensorrt.version'"),
    ("bundle", "a plan folder", "bundle {plan} -o {out}/b", 1, "is not a folder written by"),
    # triton
    ("triton", "no batch", "triton {rw} -o {out}/r --max-batch 0", 2, "argument --max-batch: must be at least 1"),
    ("triton", "no instances", "triton {rw} -o {out}/r --instances 0", 2, "argument --instances: must be at least 1"),
    ("triton", "negative new tokens", "triton {rw} -o {out}/r --max-new-tokens -1", 2,
     "argument --max-new-tokens: must be at least 1"),
    ("triton", "max tokens not a number", "triton {rw} -o {out}/r --max-tokens lots", 2,
     "argument --max-tokens: 'lots' is not a whole number"),
    ("triton", "--engine missing", "triton {rw} -o {out}/r --engine {out}/model.plan", 1,
     "--engine {out}/model.plan: no such file"),
    ("triton", "--plugin-lib without --engine", "triton {rw} -o {out}/r --plugin-lib {text}", 1,
     "--plugin-lib goes with --engine"),
    ("triton", "a plan folder", "triton {plan} -o {out}/r", 1, "is not a folder written by"),
    ("triton", "-o inside a file", "triton {rw} -o {text}/r", 1, "{text} is a file"),
    ("triton", "-o in a read-only folder", "triton {rw} -o {ro}/r", 1, "cannot write in {ro}"),
    ("triton", "-o on a full disk", "triton {rw} -o {full}/r", 1, "{full} is full"),
    ("triton", "-o on a disk too small for the graph", "triton {rw} -o {small}/r", 1,
     "is needed for the repository (a copy of portable.onnx and any engine)"),
    # serve
    ("serve", "repository missing", "serve {out}/repo", 1, "{out}/repo does not exist; give a repository"),
    ("serve", "an empty folder", "serve {emptydir}", 1, "is not a Triton model repository"),
    ("serve", "a rewritten folder", "serve {rw}", 1, "has no config.pbtxt"),
    ("serve", "a corrupt config.pbtxt", "serve {repo_bad}", 1, "not a Triton model config"),
    ("serve", "port out of range", "serve {repo} --http-port 70000", 2, "must be a port number in 1..65535"),
    ("serve", "port 0", "serve {repo} --grpc-port 0", 2, "argument --grpc-port: must be at least 1"),
    ("serve", "the same port twice", "serve {repo} --http-port 8123 --grpc-port 8123", 1,
     "--http-port and --grpc-port are both 8123"),
    ("serve", "a port in use", "serve {repo} --http-port {busy} --grpc-port 8124", 1,
     "--http-port {busy}: 127.0.0.1:{busy} cannot be used"),
    ("serve", "no time to load", "serve {repo} --timeout 0", 2, "argument --timeout: must be a number of seconds"),
    ("serve", "timeout not a number", "serve {repo} --timeout nan", 2, "must be a number of seconds above 0"),
    ("serve", "--workdir is a file", "serve {repo} --workdir {text}", 1, "--workdir {text} is a file"),
]

CALIB = CalibSpec(windows=4, seqlen=48, samples_per_type=40, min_tokens=4)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, tiny_text_file):
    """Good and bad inputs, made once: a tiny model as HF folder, export folder, rewritten folder, plan and
    Triton repository, and the damaged and wrong-kind files a user hands over by mistake."""
    root = tmp_path_factory.mktemp("bad input")
    corpus = root / "tiny corpus.txt"
    shutil.copy(tiny_text_file, corpus)
    rw = rewritten_tiny(root, corpus)
    hf, onnx = root / "llama-hf", root / "llama-onnx"
    api.quantize(str(hf), str(corpus), "rtn", "w4a4", "sink=pos:3", "cpu", root / "plan", eval_spec=None,
                 calib=CALIB, progress=False)
    paths = {"root": root, "corpus": corpus, "hf": hf, "onnx": onnx, "rw": rw, "plan": root / "plan"}
    files = root / "files"
    files.mkdir()
    for name, data in (("text", "Some notes, not a model.\n"), ("empty_txt", ""), ("short", "Just a few words.")):
        paths[name] = files / f"{name}.txt"
        paths[name].write_text(data)
    paths["binary"] = files / "binary.txt"
    paths["binary"].write_bytes(b"\xff\xfe\x00\x81 not text")
    paths["empty_onnx"] = files / "empty.onnx"
    paths["empty_onnx"].write_bytes(b"")
    paths["trunc_onnx"] = files / "truncated.onnx"
    paths["trunc_onnx"].write_bytes((onnx / "model.onnx").read_bytes()[:1000])
    paths["empty_gguf"] = files / "empty.gguf"
    paths["empty_gguf"].write_bytes(b"")
    paths["bare_onnx"] = files / "bare.onnx"  # no tokenizer beside it
    shutil.copy(onnx / "model.onnx", paths["bare_onnx"])
    paths["emptydir"] = root / "empty folder"
    paths["emptydir"].mkdir()
    paths["badcfg"] = root / "bad config"
    shutil.copytree(hf, paths["badcfg"])
    (paths["badcfg"] / "config.json").write_text('{"model_type": "llama", "hidden_size": ')
    paths["emptyweights"] = root / "empty weights"
    shutil.copytree(hf, paths["emptyweights"])
    (paths["emptyweights"] / "model.safetensors").write_bytes(b"")
    paths["engine_incomplete"] = root / "engine incomplete"
    paths["engine_incomplete"].mkdir()
    (paths["engine_incomplete"] / "model.plan").write_bytes(b"not an engine")
    (paths["engine_incomplete"] / "build.json").write_text("{}")
    return paths


@pytest.fixture(scope="module")
def repository(inputs):
    """A Triton repository of the rewritten folder, and a copy with one config.pbtxt corrupted."""
    try:  # tritonclient.grpc raises RuntimeError, not ImportError, where grpc is missing
        import tritonclient.grpc  # noqa: F401
    except (ImportError, RuntimeError) as err:
        pytest.skip(f"tritonclient with grpc is not installed (tools/setup.sh installs it): {err}")
    repo = inputs["root"] / "triton repo"
    api.triton(inputs["rw"], repo, max_tokens=64)
    bad = inputs["root"] / "triton repo bad"
    shutil.copytree(repo, bad)
    (bad / "freeact_greedy" / "config.pbtxt").write_text("name: 'freeact_greedy' this is { not protobuf")
    return {"repo": repo, "repo_bad": bad}


def _run_root(*command: str) -> bool:
    return subprocess.run(command, capture_output=True).returncode == 0


@contextlib.contextmanager
def _mounted_tmpfs(folder: Path, options: str):
    """A small tmpfs at `folder` (root only); yields whether it is mounted."""
    mounted = os.geteuid() == 0 and shutil.which("mount") is not None and _run_root(
        "mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder))
    try:
        yield mounted
    finally:
        if mounted and not _run_root("umount", str(folder)):
            _run_root("umount", "-l", str(folder))  # still busy: detach it now, the kernel frees it when unused


@pytest.fixture(scope="module")
def readonly(inputs, tmp_path_factory):
    """A read-only folder holding a copy of the rewritten folder: a read-only tmpfs as root (root writes
    through permissions), a folder without write permission as a user."""
    folder = tmp_path_factory.mktemp("read only")
    with _mounted_tmpfs(folder, "size=4m") as mounted:
        shutil.copytree(inputs["rw"], folder / "rw")
        if mounted:
            if not _run_root("mount", "-o", "remount,ro", str(folder)):
                pytest.skip("cannot remount a tmpfs read-only here")
        elif os.geteuid() != 0:
            for path in (folder / "rw", folder):
                path.chmod(0o555)
        else:
            pytest.skip("root without mount: no folder is read-only to it")
        yield {"ro": folder}
        if not mounted:
            for path in (folder, folder / "rw"):
                path.chmod(0o755)


def _filled_tmpfs(tmp_path_factory, name: str, size_kib: int, left_kib: int):
    """A tmpfs of `size_kib` with `left_kib` free (needs root to mount)."""
    folder = tmp_path_factory.mktemp(name)
    with _mounted_tmpfs(folder, f"size={size_kib}k") as mounted:
        if not mounted:
            pytest.skip("filling a file system needs a tmpfs, and mounting one needs root")
        fd = os.open(folder / "filler", os.O_WRONLY | os.O_CREAT)
        try:
            with contextlib.suppress(OSError):  # the last page may not fit
                for _ in range((size_kib - left_kib) // 4):
                    os.write(fd, b"\0" * 4096)
        finally:
            os.close(fd)
        yield folder


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    """A file system with no space left."""
    yield from ({"full": folder} for folder in _filled_tmpfs(tmp_path_factory, "full disk", 64, 0))


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A file system with 80 KiB left: room for a record, not for the tiny model's weights or graphs."""
    yield from ({"small": folder} for folder in _filled_tmpfs(tmp_path_factory, "small disk", 256, 80))


@pytest.fixture(scope="module")
def busy():
    """A port something already listens on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield {"busy": sock.getsockname()[1]}


# which fixture provides each placeholder beyond `inputs`
PROVIDERS = {"ro": "readonly", "full": "full", "small": "small", "busy": "busy", "repo": "repository",
             "repo_bad": "repository"}


def _tree(folder: Path) -> dict[str, tuple]:
    """Everything under a folder with size and modification time: what a failed command must not change."""
    found = {}
    for base, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = Path(base, name)
            stat = path.lstat()
            found[str(path.relative_to(folder))] = (stat.st_size, stat.st_mtime_ns) if name in files else ("dir",)
    return found


@pytest.mark.parametrize("command, wrong, line, code, fragment", CASES, ids=[f"{c[0]}: {c[1]}" for c in CASES])
def test_bad_input_is_one_line(request, capsys, tmp_path, inputs, command, wrong, line, code, fragment):
    paths = {"out": tmp_path / "out dir", **inputs}
    for key, fixture in PROVIDERS.items():
        if "{" + key + "}" in line:
            paths.update(request.getfixturevalue(fixture))
    paths["out"].mkdir()
    watched = [paths["out"], inputs["root"], *(paths[k] for k in ("ro", "full", "small") if k in paths)]
    before = [_tree(folder) for folder in watched]

    argv = [token.format(**paths) for token in shlex.split(line)]
    got, _, err = run_cli(capsys, *argv)

    assert got == code, err
    assert_one_line_error(got, err, fragment.format(**paths))
    assert [_tree(folder) for folder in watched] == before  # no partial, no new file, no input changed


def test_the_table_covers_every_command():
    from freeact_export.cli import COMMANDS

    covered = {case[0] for case in CASES}
    assert {c for c in COMMANDS if c != "rewrite"} | {"MODEL.onnx"} <= covered
    assert len(CASES) >= 60


# ---- the installed entry point, as a real process ------------------------------------------------

def _real(argv, prefix=(), **popen) -> subprocess.CompletedProcess:
    return subprocess.run([*prefix, sys.executable, "-m", "freeact_export", *map(str, argv)], capture_output=True,
                          text=True, timeout=120, **popen)


def _assert_real_one_line(proc, code, fragment):
    assert proc.returncode == code, proc.stderr
    assert_one_line_error(proc.returncode, proc.stderr, fragment)


def test_real_process_usage_errors_are_one_line(inputs, tmp_path):
    proc = _real(["quantize", "--model", inputs["hf"], "--corpus", inputs["corpus"], "--steps", "-5",
                  "-o", tmp_path / "plan"])
    _assert_real_one_line(proc, 2, "argument --steps: must be at least 1 (got -5)")
    proc = _real(["eval", "--model", inputs["hf"], "--corpus", inputs["corpus"], "--seqlen", "600"])
    _assert_real_one_line(proc, 1, "eval windows of 600 tokens exceed the model's context of 512 tokens")
    assert list(tmp_path.iterdir()) == []


def _file_size_limit(limit: int):
    def apply():  # Python ignores SIGXFSZ, so a write past the limit fails with EFBIG instead of killing it
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


# our own progress bars (tqdm: "perplexity:  50%|#####     | 1/2 ...") come before an error found after the work
PROGRESS = re.compile(r"[\w ()+-]+: +\d+%\|")


def test_real_process_write_refused_mid_run_is_one_line(inputs, tmp_path):
    """A write the system refuses after the work (here: past `ulimit -f`; a disk that fills up
    meanwhile is the same path) is one line naming the output, and the partial output is gone."""
    out = tmp_path / "out dir"
    out.mkdir()
    proc = _real(["eval", "--model", inputs["hf"], "--corpus", inputs["corpus"], "--seqlen", "32", "--windows", "2",
                  "--json", out / "ppl.json"], preexec_fn=_file_size_limit(256))
    lines = [line for line in proc.stderr.splitlines() if line.strip() and not PROGRESS.match(line)]
    assert proc.returncode == 1, proc.stderr
    assert_one_line_error(proc.returncode, "\n".join(lines), f"{out / 'ppl.json'}: File too large")
    assert "Traceback" not in proc.stderr
    assert "Loading weights" not in proc.stderr  # transformers' own bar, silenced; the model did load
    assert list(out.iterdir()) == []


@pytest.fixture(scope="module")
def public(inputs):
    """A world-readable folder (pytest's are private to their owner) with a copy of the model, a readable
    and an unreadable corpus, and a folder another user cannot write in; and the preexec that runs a process
    as that other user (nobody, where the tests run as root)."""
    folder = Path(tempfile.mkdtemp(prefix="freeact bad input "))
    try:
        folder.chmod(0o755)
        shutil.copytree(inputs["hf"], folder / "llama")
        shutil.copy(inputs["corpus"], folder / "corpus.txt")
        secret = folder / "secret corpus.txt"
        shutil.copy(inputs["corpus"], secret)
        locked = folder / "locked"
        locked.mkdir()
        for path in (folder / "llama", *(folder / "llama").iterdir(), folder / "corpus.txt"):
            path.chmod(0o755 if path.is_dir() else 0o644)
        env = None
        if os.geteuid() == 0:  # root reads and writes through permissions: run as nobody
            secret.chmod(0o600)
            locked.chmod(0o755)
            demote = ("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups")
            home = folder / "home"  # nobody's own (/nonexistent) would add ONNX Runtime's telemetry warning
            home.mkdir(mode=0o777)
            home.chmod(0o777)
            env = {**os.environ, "HOME": str(home)}
            probe = subprocess.run([*demote, sys.executable, "-c", "import freeact_export"], capture_output=True,
                                   env=env) if shutil.which("setpriv") else None
            if probe is None or probe.returncode != 0:
                pytest.skip("cannot run this Python as another user here (setpriv, permissions)")
        else:
            secret.chmod(0)
            locked.chmod(0o555)
            demote = ()
        yield {"folder": folder, "secret": secret, "locked": locked, "demote": demote, "env": env}
    finally:
        for path in (folder / "secret corpus.txt", folder / "locked"):
            with contextlib.suppress(OSError):
                path.chmod(0o755)
        shutil.rmtree(folder, ignore_errors=True)


def test_real_process_unreadable_input_is_one_line(public):
    proc = _real(["eval", "--model", public["folder"] / "llama", "--corpus", public["secret"]], public["demote"],
                 env=public["env"])
    _assert_real_one_line(proc, 1, f"{public['secret']}: Permission denied")


def test_real_process_unwritable_output_folder_is_one_line_before_the_work(public):
    out = public["locked"] / "ppl.json"
    proc = _real(["eval", "--model", public["folder"] / "llama", "--corpus", public["folder"] / "corpus.txt",
                  "--seqlen", "32", "--windows", "2", "--json", out], public["demote"], env=public["env"])
    _assert_real_one_line(proc, 1, f"cannot write in {public['locked']} (Permission denied)")
    assert proc.stdout == ""  # refused before the model ran: no perplexity line
    assert list(public["locked"].iterdir()) == []
