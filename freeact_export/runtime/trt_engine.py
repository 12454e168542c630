"""TensorRT engines of the plugin graph: optimisation profile, build, load (Polygraphy's lazy loaders).

Nothing here imports TensorRT at module import: Polygraphy's `polygraphy.backend.trt` imports it
on first use, and `import_tensorrt()` turns its absence into one line that says what to install.
So the CPU side (profile from the ONNX inputs, plugin library discovery, arguments, outputs) runs
and is tested on machines without TensorRT.

An engine folder (default DIR/engine/) holds
  model.plan   the serialized engine
  build.json   what built it: TensorRT and CUDA versions, GPU and compute capability, flags,
               the optimisation profile, sha256 of the plugin library and of plugin.onnx
It is written under a temporary name and renamed when complete.
"""

from __future__ import annotations

import dataclasses
import json
import platform
import time
from collections.abc import Sequence
from pathlib import Path

from freeact_export import __version__
from freeact_export.errors import UserError
from freeact_export.files import atomic_path, check_new_output
from freeact_export.machine import probe_gpu, sha256, tensorrt_cuda_major
from freeact_export.rewrite.folder import PLUGIN_GRAPH, load_rewritten, read_rewritten_graph
from freeact_export.runtime import plugin_lib

ENGINE_DIR, ENGINE_FILE, BUILD_RECORD = "engine", "model.plan", "build.json"
TIMING_CACHE = "timing.cache"
# The plugins are compiled against TensorRT 10.14's headers (plugins_trt/README.md): a 10.x runtime
# at or after that loads them.
INSTALL_HINT = ("install TensorRT's Python package for your CUDA major version (`pip install "
                "'tensorrt-cu13>=10.14,<11'` or `'tensorrt-cu12>=10.14,<11'`), or use a TensorRT tarball "
                "(TENSORRT_ROOT, then pip install its python/tensorrt-*.whl), or a TensorRT container")
PAST_PREFIXES = ("past_key_values.", "past.")

Dim = int | str | None


@dataclasses.dataclass(frozen=True)
class ProfileSpec:
    """Ranges of the one optimisation profile.

    Attributes:
        max_tokens: new tokens per request (1..max_tokens).
        max_batch: requests per batch (1..max_batch).
        opt_tokens: the token count TensorRT tunes for (default: max_tokens // 2, at least 1).
        opt_batch: the batch TensorRT tunes for (default 1: one request at a time, the edge case).
        max_past: KV-cache graphs: cached tokens (0..max_past; default max_tokens).
        opt_past: KV-cache graphs: cached tokens TensorRT tunes for (default max_past // 2).
    """

    max_tokens: int = 2048
    max_batch: int = 1
    opt_tokens: int | None = None
    opt_batch: int = 1
    max_past: int | None = None
    opt_past: int | None = None

    def __post_init__(self) -> None:
        for name in ("max_tokens", "max_batch", "opt_batch"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.opt_tokens is not None and not 1 <= self.opt_tokens <= self.max_tokens:
            raise ValueError(f"opt_tokens must lie in 1..max_tokens ({self.max_tokens}), got {self.opt_tokens}")
        if self.opt_batch > self.max_batch:
            raise ValueError(f"opt_batch ({self.opt_batch}) must not exceed max_batch ({self.max_batch})")
        if self.max_past is not None and self.max_past < 0:
            raise ValueError(f"max_past must be at least 0, got {self.max_past}")
        if self.opt_past is not None and not 0 <= self.opt_past <= self.past_max:
            raise ValueError(f"opt_past must lie in 0..max_past ({self.past_max}), got {self.opt_past}")

    @property
    def tokens(self) -> tuple[int, int, int]:
        return 1, self.opt_tokens or max(1, self.max_tokens // 2), self.max_tokens

    @property
    def past_max(self) -> int:
        return self.max_tokens if self.max_past is None else self.max_past

    @property
    def past(self) -> tuple[int, int, int]:
        return 0, self.past_max // 2 if self.opt_past is None else self.opt_past, self.past_max

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class BuildSpec:
    """Builder flags. fp16 lets TensorRT pick fp16 kernels for the floating-point layers (the plugins
    choose their own formats); version_compatible embeds the lean runtime so later TensorRT 10.x
    runtimes can load the plan (exclude_lean_runtime leaves it out: the runtime must bring it).
    strongly_typed parses the graph as a strongly typed network: every tensor keeps the graph's type
    (the plugins' INT8 codes included, with no INT8 scales asked for), so no fp16 flag."""

    fp16: bool = True
    version_compatible: bool = False
    exclude_lean_runtime: bool = False
    strongly_typed: bool = False

    def __post_init__(self) -> None:
        if self.exclude_lean_runtime and not self.version_compatible:
            raise ValueError("exclude_lean_runtime needs version_compatible (--exclude-lean-runtime needs "
                             "--version-compatible)")
        if self.strongly_typed and self.fp16:
            raise ValueError("a strongly typed network takes its precisions from the graph, not from fp16 "
                             "(--strongly-typed builds without --fp16)")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


Shapes = tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]


def graph_inputs(path: str | Path) -> list[tuple[str, list[Dim]]]:
    """(name, dims) of an ONNX graph's inputs; a dim is an int, a symbolic name, or None (unknown)."""
    model = read_rewritten_graph(path)
    initializers = {i.name for i in model.graph.initializer}
    inputs = []
    for value in model.graph.input:
        if value.name in initializers:
            continue
        dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                for d in value.type.tensor_type.shape.dim]
        inputs.append((value.name, dims))
    return inputs


def compute_profile(inputs: Sequence[tuple[str, Sequence[Dim]]], spec: ProfileSpec) -> dict[str, Shapes]:
    """min / opt / max shapes of every input, from the graph's dims and the spec's ranges.

    The roles of the symbolic dims are read from the inputs whose layout is known: input_ids is
    [batch, tokens]; past_key_values.* are [batch, kv heads, past, head dim]; attention_mask is
    [batch, tokens] in a prefill graph and [batch, past + tokens] in a KV-cache graph. Any other
    input (position_ids, a token-type input) may use these dims; fixed dims stay fixed.

    Raises:
        UserError: no input_ids, or a dynamic dim whose role cannot be told (named).
    """
    by_name = {name: list(dims) for name, dims in inputs}
    if "input_ids" not in by_name or len(by_name["input_ids"]) != 2:
        raise UserError("the plugin graph has no input_ids [batch, tokens] input; cannot derive a TensorRT "
                        f"optimisation profile (inputs: {', '.join(by_name) or 'none'})")
    batch = 1, spec.opt_batch, spec.max_batch
    ranges: dict[str, tuple[int, int, int]] = {}

    def assign(dim: Dim, value: tuple[int, int, int], where: str) -> None:
        if isinstance(dim, str):
            ranges.setdefault(dim, value)
        elif dim is None:
            raise UserError(f"{where} has an unnamed dynamic dim; cannot tell its role for the TensorRT profile")

    batch_dim, tokens_dim = by_name["input_ids"]
    assign(batch_dim, batch, "input_ids axis 0")
    assign(tokens_dim, spec.tokens, "input_ids axis 1")
    past_inputs = [n for n in by_name if n.startswith(PAST_PREFIXES)]
    for name in past_inputs:
        dims = by_name[name]
        if len(dims) != 4:
            raise UserError(f"KV-cache input {name} has {len(dims)} dims; expected [batch, kv heads, past, head dim]")
        assign(dims[0], batch, f"{name} axis 0")
        assign(dims[2], spec.past, f"{name} axis 2")
    if "attention_mask" in by_name and len(by_name["attention_mask"]) == 2:
        mask_dim = by_name["attention_mask"][1]
        if past_inputs and mask_dim != tokens_dim:
            (p_min, p_opt, p_max), (t_min, t_opt, t_max) = spec.past, spec.tokens
            assign(mask_dim, (p_min + t_min, p_opt + t_opt, p_max + t_max), "attention_mask axis 1")
    profile = {}
    for name, dims in by_name.items():
        shapes: list[list[int]] = [[], [], []]
        for axis, dim in enumerate(dims):
            if isinstance(dim, int) and dim > 0:
                value = (dim, dim, dim)
            elif isinstance(dim, str) and dim in ranges:
                value = ranges[dim]
            else:
                raise UserError(f"input {name} axis {axis} is dynamic ({dim!r}) but not one of the dims the profile "
                                f"knows ({', '.join(sorted(ranges))}); cannot build a TensorRT profile for it")
            for k in range(3):
                shapes[k].append(value[k])
        profile[name] = tuple(tuple(s) for s in shapes)
    return profile


def import_tensorrt():
    """The tensorrt module; UserError with what to install where it does not import."""
    try:
        import tensorrt
    except ImportError as err:
        raise UserError(f"TensorRT's Python package is not importable here ({err}); {INSTALL_HINT}") from None
    return tensorrt


def gpu_facts() -> dict:
    """GPU 0 (name, compute capability, sm_XY, driver CUDA version); UserError where there is none."""
    facts = probe_gpu()
    if facts.get("gpu") is None:
        raise UserError(f"building and running TensorRT engines needs an NVIDIA GPU: {facts['why']}")
    return facts


_LOADED_LIBRARIES: dict[str, object] = {}


def load_plugin_library(path: Path):
    """Load the plugin library into TensorRT's process-wide plugin registry, once per process.

    TensorRT's own `load_library` (it calls getCreators / setLoggerFinder) is the one way this
    package loads the library; plugins_trt/README.md: never load it both ways in one process, so
    Polygraphy's LoadPlugins (a plain dlopen relying on load-time self-registration) is not used.
    """
    trt = import_tensorrt()
    key = str(Path(path).resolve())
    if key not in _LOADED_LIBRARIES:
        handle = trt.get_plugin_registry().load_library(key)
        if not handle:
            raise UserError(f"TensorRT could not load the plugin library {key} (see TensorRT's log above)")
        _LOADED_LIBRARIES[key] = handle
    return _LOADED_LIBRARIES[key]


def default_engine_dir(folder: str | Path) -> Path:
    return Path(folder) / ENGINE_DIR


def build_engine(folder: str | Path, output: str | Path | None = None, profile: ProfileSpec = ProfileSpec(),
                 spec: BuildSpec = BuildSpec(), *, timing_cache: str | Path | None = None,
                 plugin_library: str | Path | None = None, overwrite: bool = False) -> dict:
    """Build a TensorRT engine from DIR/plugin.onnx into an engine folder; returns the build record.

    Args:
        folder: a folder written by `freeact-export MODEL.onnx`.
        output: engine folder to create (default DIR/engine).
        profile: the optimisation profile's ranges.
        spec: builder flags.
        timing_cache: tactic timing cache, loaded when it exists and saved (merged) after the build
            (default DIR/timing.cache, outside the engine folder so rebuilds reuse it).
        plugin_library: the plugin library (default: plugin_lib.library_path()).
        overwrite: replace an existing engine folder.
    """
    path, _, _ = load_rewritten(folder)
    graph = path / PLUGIN_GRAPH
    shapes = compute_profile(graph_inputs(graph), profile)
    library = Path(plugin_library) if plugin_library is not None else plugin_lib.library_path()
    if not library.is_file():
        raise UserError(f"plugin library {library} does not exist; {plugin_lib.BUILD_HINT}")
    out = Path(output) if output is not None else default_engine_dir(path)
    cache = Path(timing_cache) if timing_cache is not None else path / TIMING_CACHE
    check_new_output(out, overwrite)  # before TensorRT: the same check atomic_path makes
    trt = import_tensorrt()
    gpu = gpu_facts()
    from polygraphy.backend.trt import CreateConfig, EngineBytesFromNetwork, NetworkFromOnnxPath, Profile

    load_plugin_library(library)
    trt_profile = Profile()
    for name, (low, opt, high) in shapes.items():
        trt_profile.add(name, low, opt, high)

    def configure(builder, network):
        config = CreateConfig(fp16=spec.fp16, profiles=[trt_profile],
                              load_timing_cache=str(cache) if cache.is_file() else None,
                              version_compatible=spec.version_compatible or None,
                              exclude_lean_runtime=spec.exclude_lean_runtime or None)(builder, network)
        if spec.version_compatible:  # the lean runtime loads plugins only from libraries serialized with the plan
            config.plugins_to_serialize = [str(library.resolve())]
        return config

    start = time.perf_counter()
    network = NetworkFromOnnxPath(str(graph), strongly_typed=spec.strongly_typed or None)
    engine_bytes = EngineBytesFromNetwork(network, config=configure,
                                          save_timing_cache=str(cache))()
    build_s = round(time.perf_counter() - start, 1)
    record = {
        "kind": "build", "folder": str(path), "graph": PLUGIN_GRAPH, "engine": ENGINE_FILE,
        "tensorrt": {"version": trt.__version__, **spec.to_dict()},
        "cuda": {"major": tensorrt_cuda_major() or int(gpu["cuda_driver"].split(".")[0]),
                 "driver": gpu["cuda_driver"]},
        "gpu": {"name": gpu["gpu"], "compute_capability": gpu["compute_capability"], "sm": gpu["sm"]},
        "profile_spec": profile.to_dict(),
        "profile": {name: {"min": list(s[0]), "opt": list(s[1]), "max": list(s[2])} for name, s in shapes.items()},
        "plugin_library": {"path": str(library.resolve()), "sha256": sha256(library)},
        "plugin_graph_sha256": sha256(graph),
        "timing_cache": str(cache),
        "build_s": build_s,
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "freeact_export": __version__, "host": platform.node(),
    }
    with atomic_path(out, overwrite) as tmp:
        tmp.mkdir()
        (tmp / ENGINE_FILE).write_bytes(bytes(engine_bytes))
        record["engine_sha256"] = sha256(tmp / ENGINE_FILE)
        (tmp / BUILD_RECORD).write_text(json.dumps(record, indent=2) + "\n")
    return record


# What bundle, triton and check read from build.json (build_engine writes them all): checked on
# reading, so a damaged or hand-made record is one line, not a KeyError deep inside a command.
RECORD_KEYS = ("tensorrt.version", "tensorrt.version_compatible", "tensorrt.exclude_lean_runtime", "cuda.major",
               "gpu.name", "gpu.sm", "profile", "plugin_library.path", "plugin_library.sha256",
               "plugin_graph_sha256")


def read_build_record(engine_dir: Path) -> dict:
    """build.json of an engine folder; UserError where the folder holds no engine or the record is
    not JSON or lacks one of RECORD_KEYS."""
    engine_dir = Path(engine_dir)
    plan, path = engine_dir / ENGINE_FILE, engine_dir / BUILD_RECORD
    if not plan.is_file() or not path.is_file():
        raise UserError(f"no TensorRT engine in {engine_dir} (needs {ENGINE_FILE} and {BUILD_RECORD}); build one "
                        "with 'freeact-export build DIR' on a machine with TensorRT and an NVIDIA GPU")
    rebuild = "rebuild the engine with 'freeact-export build DIR --overwrite' (it writes both files)"
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"{path} is not valid JSON ({err}); {rebuild}") from None
    for key in RECORD_KEYS:
        node = record
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                raise UserError(f"{path} lacks '{key}' (an incomplete build record); {rebuild}")
            node = node[part]
    return record


def plugin_library_for(record: dict) -> Path:
    """The plugin library an engine was built with: the recorded path, else plugin_lib.library_path(),
    whichever exists with the recorded sha256 (an engine holds the plugins' serialized fields, which
    only that library's creators read back)."""
    want = record["plugin_library"]["sha256"]
    candidates = [Path(record["plugin_library"]["path"])]
    try:
        candidates.append(plugin_lib.library_path())
    except UserError:
        pass
    for candidate in candidates:
        if candidate.is_file() and sha256(candidate) == want:
            return candidate
    raise UserError(f"the plugin library the engine was built with (sha256 {want[:12]}...) is not at "
                    f"{' or '.join(map(str, dict.fromkeys(candidates)))}; rebuild the engine or set "
                    f"{plugin_lib.ENV_LIBRARY}")


def engine_loader(engine_dir: Path, record: dict):
    """A Polygraphy loader of the engine (plugin library loaded first); nothing runs until it is called."""
    from polygraphy.backend.common import BytesFromPath
    from polygraphy.backend.trt import EngineFromBytes

    trt = import_tensorrt()
    load_plugin_library(plugin_library_for(record))

    def runtime():
        rt = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        if record["tensorrt"].get("version_compatible"):
            rt.engine_host_code_allowed = True  # the plan carries the lean runtime
        return rt

    return EngineFromBytes(BytesFromPath(str(Path(engine_dir) / ENGINE_FILE)), runtime=runtime)


def check_runner(engine_dir: Path, feeds: Sequence[dict], name: str = "tensorrt"):
    """(Polygraphy TrtRunner, build record) for `check`, or UserError saying why it cannot run here.

    Refuses before any GPU work when TensorRT does not import, no GPU is present, the GPU is not the
    one the engine was built for, or a saved input lies outside the engine's profile.
    """
    record = read_build_record(engine_dir)
    import_tensorrt()
    gpu = gpu_facts()
    if gpu["sm"] != record["gpu"]["sm"]:
        raise UserError(f"the engine was built for {record['gpu']['sm']} ({record['gpu']['name']}), "
                        f"this GPU is {gpu['sm']} ({gpu['gpu']})")
    for feed in feeds:
        for input_name, array in feed.items():
            bounds = record["profile"].get(input_name)
            if bounds is None:
                raise UserError(f"the engine has no input {input_name} (built from another graph?)")
            if any(not lo <= d <= hi for d, lo, hi in zip(array.shape, bounds["min"], bounds["max"], strict=True)):
                raise UserError(f"saved input {input_name} {list(array.shape)} lies outside the engine's profile "
                                f"{bounds['min']}..{bounds['max']}; rebuild with a larger --max-tokens / --max-batch")
    from polygraphy.backend.trt import TrtRunner

    return TrtRunner(engine_loader(engine_dir, record), name=name), record
