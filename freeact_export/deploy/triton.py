"""A Triton Inference Server model repository from a rewritten folder (`freeact-export MODEL.onnx -o DIR`).

Models written (each a folder with config.pbtxt and version 1/):
  freeact_lm_trt    tensorrt_plan: a TensorRT engine of the plugin graph, the plugin library
                    beside it and LOAD.md (only with an engine from 'freeact-export build'
                    or --engine: none can be built without TensorRT)
  freeact_lm_onnx   Python backend: the portable graph in ONNX Runtime (any CPU, no TensorRT)
  freeact_tokenize  Python backend: text → input_ids, attention_mask (tokenizer.json)
  freeact_greedy    Python backend: logits → greedy next token id and text
  freeact_lm        ensemble: text → tokenize → freeact_lm_onnx → greedy; returns logits too
  freeact_generate  Python backend, BLS loop: text → up to max_new_tokens greedy tokens

Every config.pbtxt is a `model_config_pb2.ModelConfig` (Triton's own protobuf, shipped with
tritonclient) printed with text_format, parsed back and checked before the repository is
renamed into place.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from importlib import resources
from pathlib import Path

import onnx
from google.protobuf import text_format

from freeact_export.errors import UserError
from freeact_export.files import atomic_path, check_new_output
from freeact_export.rewrite.folder import PLUGIN_GRAPH, PORTABLE_GRAPH, load_rewritten, read_rewritten_graph

TRT_MODEL, ONNX_MODEL = "freeact_lm_trt", "freeact_lm_onnx"
TOKENIZE_MODEL, GREEDY_MODEL, ENSEMBLE_MODEL, GENERATE_MODEL = (
    "freeact_tokenize", "freeact_greedy", "freeact_lm", "freeact_generate")
CONFIG = "config.pbtxt"
_ELEM_TYPES = {onnx.TensorProto.FLOAT: "TYPE_FP32", onnx.TensorProto.FLOAT16: "TYPE_FP16",
               onnx.TensorProto.BFLOAT16: "TYPE_BF16", onnx.TensorProto.DOUBLE: "TYPE_FP64",
               onnx.TensorProto.INT64: "TYPE_INT64", onnx.TensorProto.INT32: "TYPE_INT32",
               onnx.TensorProto.INT8: "TYPE_INT8", onnx.TensorProto.UINT8: "TYPE_UINT8",
               onnx.TensorProto.BOOL: "TYPE_BOOL"}


_CLIENT_HINT = ("run 'bash tools/setup.sh', or 'pip install grpcio==1.85.3' and 'pip install --no-deps "
                "tritonclient==2.73.0'")


def _model_config_pb2():
    """Triton's ModelConfig protobuf module; UserError where tritonclient, its grpc support or a protobuf
    runtime that loads its generated code is missing."""
    import importlib.util

    if importlib.util.find_spec("tritonclient") is None:
        raise UserError("tritonclient is not installed (Triton repositories are written and checked with its "
                        f"model-config protobuf); {_CLIENT_HINT}")
    # tritonclient.grpc imports grpc before the protobuf modules and turns its absence into a RuntimeError.
    try:
        from tritonclient.grpc import model_config_pb2
    except (ImportError, RuntimeError) as err:
        raise UserError(f"tritonclient is installed without its grpc support, which holds Triton's model-config "
                        f"protobuf ({' '.join(str(err).split())}); {_CLIENT_HINT}") from None
    except Exception as err:  # protobuf's VersionError: a runtime too old for tritonclient's generated code
        raise UserError(f"tritonclient's model-config protobuf does not load ({type(err).__name__}: "
                        f"{' '.join(str(err).split())}); {_CLIENT_HINT}") from None
    return model_config_pb2


@dataclasses.dataclass(frozen=True)
class TritonSpec:
    """Serving settings shared by the models of one repository."""

    max_batch: int = 8
    instances: int = 1
    max_tokens: int = 2048
    max_new_tokens: int = 32
    queue_delay_us: int = 100

    def __post_init__(self):
        for name in ("max_batch", "instances", "max_tokens", "max_new_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name.replace('_', '-')} must be at least 1 (got {getattr(self, name)})")
        if self.queue_delay_us < 0:
            raise ValueError(f"queue delay must be >= 0 microseconds (got {self.queue_delay_us})")


def _tensor(message, name: str, data_type: str, dims: list[int], optional: bool = False):
    pb = _model_config_pb2()
    tensor = message.add(name=name, data_type=pb.DataType.Value(data_type), dims=dims)
    if optional:
        tensor.optional = True
    return tensor


def _config(name: str, spec: TritonSpec, *, backend: str = "", platform: str = "", batched: bool = True,
            kind: str = "KIND_CPU", params: dict[str, str] | None = None):
    pb = _model_config_pb2()
    config = pb.ModelConfig(name=name, backend=backend, platform=platform,
                            max_batch_size=spec.max_batch if batched else 0)
    if batched and platform != "ensemble":
        config.dynamic_batching.max_queue_delay_microseconds = spec.queue_delay_us
    if platform != "ensemble":
        config.instance_group.add(kind=pb.ModelInstanceGroup.Kind.Value(kind), count=spec.instances)
    for key, value in (params or {}).items():
        config.parameters[key].string_value = str(value)
    return config


def _graph_io(path: Path, batched: bool):
    """(inputs, outputs) of an ONNX graph as (name, Triton type, dims); the batch dim dropped when batched."""
    model = read_rewritten_graph(path)
    initializers = {i.name for i in model.graph.initializer}

    def rows(values):
        out = []
        for value in values:
            if value.name in initializers:
                continue
            tensor = value.type.tensor_type
            if tensor.elem_type not in _ELEM_TYPES:
                raise UserError(f"{path.name}: {value.name} has ONNX element type "
                                f"{onnx.TensorProto.DataType.Name(tensor.elem_type)}, which Triton's TensorRT "
                                "backend does not take")
            dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim]
            out.append((value.name, _ELEM_TYPES[tensor.elem_type], dims[1:] if batched else dims))
        return out

    return rows(model.graph.input), rows(model.graph.output)


def _vocab(path: Path) -> int:
    _, outputs = _graph_io(path, batched=False)
    logits = next((o for o in outputs if o[0] == "logits"), outputs[0])
    return logits[2][-1]


def _write_config(folder: Path, config) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "1").mkdir(exist_ok=True)
    (folder / CONFIG).write_text(text_format.MessageToString(config))


def _python_model(folder: Path, template: str) -> None:
    source = resources.files("freeact_export.deploy.triton_models").joinpath(template)
    (folder / "1" / "model.py").write_text(source.read_text())


def _trt_model(repo: Path, folder: Path, engine: Path, plugin: Path, spec: TritonSpec) -> None:
    inputs, outputs = _graph_io(folder / PLUGIN_GRAPH, batched=True)
    config = _config(TRT_MODEL, spec, platform="tensorrt_plan", kind="KIND_GPU",
                     params={"max_tokens": spec.max_tokens, "plugin_library": plugin.name})
    for name, dtype, dims in inputs:
        _tensor(config.input, name, dtype, dims)
    for name, dtype, dims in outputs:
        _tensor(config.output, name, dtype, dims)
    target = repo / TRT_MODEL
    _write_config(target, config)
    shutil.copy2(engine, target / "1" / "model.plan")
    shutil.copy2(plugin, target / plugin.name)
    (target / "LOAD.md").write_text(_LOAD_MD.format(lib=plugin.name, model=TRT_MODEL, max_tokens=spec.max_tokens))


_LOAD_MD = """\
# Loading {model}

`1/model.plan` is a TensorRT engine of the FreeAct plugin graph. Its layers FreeActQuantize and
Int4MatMul live in the plugin library `{lib}` beside this file; TensorRT must have loaded that
library before it deserializes the engine, or loading fails with "getPluginCreator could not
find plugin". Either of:

    tritonserver --model-repository=/models \\
        --backend-config=tensorrt,plugins=/models/{model}/{lib}

    LD_PRELOAD=/models/{model}/{lib} tritonserver --model-repository=/models

(several libraries: `plugins=a.so;b.so`). The engine and the library must come from the same
TensorRT major version as the server's, and the engine was built for one GPU architecture:
build it on the GPU kind that serves it. The engine's optimization profile covers 1 to
{max_tokens} tokens; longer requests fail.
"""


def _onnx_model(repo: Path, folder: Path, spec: TritonSpec, files: list[str]) -> None:
    config = _config(ONNX_MODEL, spec, backend="python",
                     params={"onnx_file": PORTABLE_GRAPH, "max_tokens": spec.max_tokens, "intra_op_threads": 0})
    _tensor(config.input, "input_ids", "TYPE_INT64", [-1])
    _tensor(config.input, "attention_mask", "TYPE_INT64", [-1], optional=True)
    _tensor(config.output, "logits", "TYPE_FP32", [-1, _vocab(folder / PORTABLE_GRAPH)])
    target = repo / ONNX_MODEL
    _write_config(target, config)
    _python_model(target, "lm_onnx.py")
    for name in files:  # the graph and its external data file, if any
        shutil.copy2(folder / name, target / "1" / name)


def _eos_ids(folder: Path) -> list[int]:
    ids: list[int] = []
    for name in ("generation_config.json", "config.json"):
        path = folder / name
        if path.is_file():
            value = json.loads(path.read_text()).get("eos_token_id")
            for item in value if isinstance(value, list) else [value]:
                if isinstance(item, int) and item not in ids:
                    ids.append(item)
    return ids


def _pad_id(folder: Path) -> int:
    for name in ("generation_config.json", "config.json"):
        path = folder / name
        if path.is_file():
            value = json.loads(path.read_text()).get("pad_token_id")
            if isinstance(value, int):
                return value
    return 0


def _text_models(repo: Path, folder: Path, spec: TritonSpec) -> None:
    vocab = _vocab(folder / PORTABLE_GRAPH)
    tokenize = _config(TOKENIZE_MODEL, spec, backend="python",
                       params={"max_tokens": spec.max_tokens, "pad_token_id": _pad_id(folder)})
    _tensor(tokenize.input, "text", "TYPE_STRING", [1])
    _tensor(tokenize.output, "input_ids", "TYPE_INT64", [-1])
    _tensor(tokenize.output, "attention_mask", "TYPE_INT64", [-1])

    greedy = _config(GREEDY_MODEL, spec, backend="python")
    _tensor(greedy.input, "logits", "TYPE_FP32", [-1, vocab])
    _tensor(greedy.input, "attention_mask", "TYPE_INT64", [-1])
    _tensor(greedy.output, "next_token_id", "TYPE_INT64", [1])
    _tensor(greedy.output, "next_token", "TYPE_STRING", [1])

    ensemble = _config(ENSEMBLE_MODEL, spec, platform="ensemble")
    _tensor(ensemble.input, "text", "TYPE_STRING", [1])
    _tensor(ensemble.output, "input_ids", "TYPE_INT64", [-1])
    _tensor(ensemble.output, "logits", "TYPE_FP32", [-1, vocab])
    _tensor(ensemble.output, "next_token_id", "TYPE_INT64", [1])
    _tensor(ensemble.output, "next_token", "TYPE_STRING", [1])
    steps = ensemble.ensemble_scheduling.step
    steps.add(model_name=TOKENIZE_MODEL, model_version=-1, input_map={"text": "text"},
              output_map={"input_ids": "input_ids", "attention_mask": "attention_mask"})
    steps.add(model_name=ONNX_MODEL, model_version=-1,
              input_map={"input_ids": "input_ids", "attention_mask": "attention_mask"},
              output_map={"logits": "logits"})
    steps.add(model_name=GREEDY_MODEL, model_version=-1,
              input_map={"logits": "logits", "attention_mask": "attention_mask"},
              output_map={"next_token_id": "next_token_id", "next_token": "next_token"})

    generate = _config(GENERATE_MODEL, spec, backend="python", batched=False,
                       params={"lm_model": ONNX_MODEL, "max_new_tokens": spec.max_new_tokens,
                               "max_tokens": spec.max_tokens,
                               "eos_token_ids": ",".join(str(i) for i in _eos_ids(folder))})
    _tensor(generate.input, "text", "TYPE_STRING", [1])
    _tensor(generate.input, "max_new_tokens", "TYPE_INT32", [1], optional=True)
    _tensor(generate.output, "generated_ids", "TYPE_INT64", [-1])
    _tensor(generate.output, "generated_text", "TYPE_STRING", [1])

    for config, template in ((tokenize, "preprocess.py"), (greedy, "postprocess.py"), (ensemble, None),
                             (generate, "generate.py")):
        target = repo / config.name
        _write_config(target, config)
        if template:
            _python_model(target, template)
            shutil.copy2(folder / "tokenizer.json", target / "1" / "tokenizer.json")


def write_repository(folder: str | Path, output: str | Path, spec: TritonSpec = TritonSpec(), *,
                     engine: str | Path | None = None, plugin: str | Path | None = None,
                     overwrite: bool = False) -> dict:
    """Write the repository; returns a record naming the models written and those skipped (and why).

    Args:
        folder: a folder written by `freeact-export MODEL.onnx -o DIR`.
        output: the repository folder to create.
        engine: a TensorRT engine of DIR/plugin.onnx (model.plan, or a folder from 'freeact-export
            build'; default: DIR/engine/ when it holds one); without one the tensorrt_plan model is skipped.
        plugin: the FreeAct plugin library (default: the one the engine was built with, per its
            build.json, else the one plugins_trt builds); only with an engine.
    """
    _model_config_pb2()  # a missing tritonclient is refused before any work
    source, _, report = load_rewritten(folder)
    out = Path(output)
    check_new_output(out, overwrite)
    engine, plugin, build = _resolve_engine(source, engine, plugin)
    files = report.get("files", {}).get(PORTABLE_GRAPH, [PORTABLE_GRAPH])
    missing = [name for name in files if not (source / name).is_file()]
    if missing:
        raise UserError(f"{source} lacks {', '.join(missing)} (listed in its report.json); rewrite it again")
    written, skipped = [], {}
    with atomic_path(out, overwrite) as tmp:
        tmp.mkdir()
        if engine is not None:
            _trt_model(tmp, source, engine, plugin, spec)
            if build is not None:
                (tmp / TRT_MODEL / "build.json").write_text(json.dumps(build, indent=2) + "\n")
            written.append(TRT_MODEL)
        else:
            skipped[TRT_MODEL] = (f"no --engine given and no engine in {source / 'engine'}: build one with "
                                  f"'freeact-export build {source}' on the serving GPU (TensorRT is needed)")
        _onnx_model(tmp, source, spec, files)
        written.append(ONNX_MODEL)
        if (source / "tokenizer.json").is_file():
            _text_models(tmp, source, spec)
            written += [TOKENIZE_MODEL, GREEDY_MODEL, ENSEMBLE_MODEL, GENERATE_MODEL]
        else:
            for name in (TOKENIZE_MODEL, GREEDY_MODEL, ENSEMBLE_MODEL, GENERATE_MODEL):
                skipped[name] = f"{source} has no tokenizer.json (the text models use the fast tokenizer's file)"
        validate_repository(tmp)
        record = {"kind": "triton", "folder": str(source), "repository": str(out), "models": written,
                  "skipped": skipped, "spec": dataclasses.asdict(spec)}
    return record


def _resolve_engine(source: Path, engine, plugin) -> tuple[Path | None, Path | None, dict | None]:
    """(engine file, plugin library, build record or None) from --engine / --plugin-lib / DIR/engine/.

    --engine is a model.plan or a folder from 'freeact-export build'; without it DIR/engine/ is
    used when it holds an engine. With a build record the library is the one the engine was
    built with (its sha256 recorded), unless --plugin-lib names one.
    """
    from freeact_export.runtime import plugin_lib, trt_engine

    if engine is None:
        default = trt_engine.default_engine_dir(source)
        if not (default / trt_engine.ENGINE_FILE).is_file():
            if plugin is not None:
                raise UserError("--plugin-lib goes with --engine (the plugin library is copied beside the engine)")
            return None, None, None
        engine = default
    engine = Path(engine)
    build = None
    if engine.is_dir():
        build = trt_engine.read_build_record(engine)
        engine = engine / trt_engine.ENGINE_FILE
    elif not engine.is_file():
        raise UserError(f"--engine {engine}: no such file (build the engine from {source / PLUGIN_GRAPH} "
                        "with 'freeact-export build' on the serving GPU)")
    if plugin is not None:
        plugin = Path(plugin)
        if not plugin.is_file():
            raise UserError(f"--plugin-lib {plugin}: no such file")
    else:
        plugin = trt_engine.plugin_library_for(build) if build is not None else plugin_lib.library_path()
    return engine, plugin, build


def load_config(path: Path):
    """Parse a config.pbtxt with Triton's ModelConfig; UserError with the parser's message."""
    pb = _model_config_pb2()
    try:
        return text_format.Parse(path.read_text(), pb.ModelConfig())
    except text_format.ParseError as err:
        raise UserError(f"{path}: not a Triton model config: {err}") from None


def validate_repository(repo: str | Path) -> dict[str, object]:
    """Parse and check every model's config.pbtxt in a repository; returns name → ModelConfig.

    Checks what Triton would refuse at load time: the name equals the folder, a backend or
    platform is set, version 1/ holds what that backend loads, dims are positive or -1, and
    every ensemble step names a model of the repository, maps only to tensors that model
    declares, reads only tensors that exist by then, with matching data types.
    """
    repo = Path(repo)
    if not repo.is_dir() or not any(p.is_dir() for p in repo.iterdir()):
        raise UserError(f"{repo} is not a Triton model repository (no model folders); write one with "
                        "'freeact-export triton DIR -o REPO'")
    configs = {}
    for folder in sorted(p for p in repo.iterdir() if p.is_dir()):
        if not (folder / CONFIG).is_file():
            raise UserError(f"{folder} has no {CONFIG}")
        config = load_config(folder / CONFIG)
        configs[folder.name] = (folder, config)
    for name, (folder, config) in configs.items():
        where = f"{folder / CONFIG}"
        if config.name != name:
            raise UserError(f"{where}: name '{config.name}' differs from its folder '{name}'")
        needs = {"python": "model.py"}.get(config.backend) or {"tensorrt_plan": "model.plan"}.get(config.platform)
        if config.platform != "ensemble" and needs is None:
            raise UserError(f"{where}: unknown backend/platform '{config.backend or config.platform}'")
        if needs and not (folder / "1" / needs).is_file():
            raise UserError(f"{where}: version 1/ has no {needs}")
        for tensor in [*config.input, *config.output]:
            if not tensor.dims or any(d == 0 or d < -1 for d in tensor.dims):
                raise UserError(f"{where}: tensor {tensor.name} has dims {list(tensor.dims)}")
        if config.platform == "ensemble":
            _check_ensemble(where, config, {n: c for n, (_, c) in configs.items()})
    return {name: config for name, (_, config) in configs.items()}


def _check_ensemble(where: str, config, configs: dict) -> None:
    available = {t.name: t.data_type for t in config.input}
    for step in config.ensemble_scheduling.step:
        model = configs.get(step.model_name)
        if model is None:
            raise UserError(f"{where}: step model '{step.model_name}' is not in the repository")
        model_in = {t.name: t.data_type for t in model.input}
        model_out = {t.name: t.data_type for t in model.output}
        for model_name, tensor in step.input_map.items():
            if model_name not in model_in or tensor not in available or available[tensor] != model_in[model_name]:
                raise UserError(f"{where}: step {step.model_name} input {model_name} <- {tensor} does not match")
        for model_name, tensor in step.output_map.items():
            if model_name not in model_out:
                raise UserError(f"{where}: step {step.model_name} has no output {model_name}")
            available[tensor] = model_out[model_name]
    for tensor in config.output:
        if available.get(tensor.name) != tensor.data_type:
            raise UserError(f"{where}: ensemble output {tensor.name} is not produced with its data type")
