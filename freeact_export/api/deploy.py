"""Entry points for deployment: TensorRT engines, edge bundles, Triton repositories and the local server."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from freeact_export.errors import UserError
from freeact_export.preflight import files_bytes, require_room, writing


def build_engine(folder: str | Path, output: str | Path | None = None, profile=None, spec=None, *,
                 timing_cache: str | Path | None = None, plugin_library: str | Path | None = None,
                 overwrite: bool = False) -> dict:
    """TensorRT engine of DIR/plugin.onnx with the plugin library loaded; see runtime/trt_engine.py.

    Args:
        profile: a trt_engine.ProfileSpec (default: 1..2048 tokens, batch 1).
        spec: a trt_engine.BuildSpec (default: fp16).
    """
    from freeact_export.runtime import trt_engine

    source = Path(folder)
    if source.is_dir():  # else build_engine names what the folder lacks
        graph = files_bytes(source / "plugin.onnx", source / "plugin.onnx.data")
        require_room(source / "engine" if output is None else output, graph,
                     "the engine (estimated as the plugin graph's size)")
    with writing(source / "engine" if output is None else output):
        return trt_engine.build_engine(folder, output, profile or trt_engine.ProfileSpec(),
                                       spec or trt_engine.BuildSpec(), timing_cache=timing_cache,
                                       plugin_library=plugin_library, overwrite=overwrite)


def bundle(folder: str | Path, output: str | Path, engine: str | Path | None = None, *,
           overwrite: bool = False) -> dict:
    """Edge bundle (engine, plugin library, manifest, runner.py) of a built engine; see deploy/bundle.py."""
    from freeact_export.deploy.bundle import bundle as make_bundle

    require_room(output, files_bytes(Path(folder) / "engine" if engine is None else Path(engine)),
                 "the bundle (a copy of the engine)")
    with writing(output):
        return make_bundle(folder, output, engine, overwrite=overwrite)


def triton(folder: str | Path, output: str | Path, *, engine: str | Path | None = None,
           plugin: str | Path | None = None, max_batch: int = 8, instances: int = 1, max_tokens: int = 2048,
           max_new_tokens: int = 32, overwrite: bool = False) -> dict:
    """Write a Triton model repository from a rewritten folder (see freeact_export.deploy.triton).

    The tensorrt_plan model is written only with `engine` (TensorRT cannot build one here);
    the ONNX Runtime (Python backend) model always; the tokenizer models, the ensemble and
    the generation loop when the folder has a tokenizer.json. Returns the record of what
    was written and what was skipped, with why.
    """
    from freeact_export.deploy.triton import TritonSpec, write_repository

    try:
        spec = TritonSpec(max_batch=max_batch, instances=instances, max_tokens=max_tokens,
                          max_new_tokens=max_new_tokens)
    except ValueError as err:
        raise UserError(str(err)) from None
    copied = files_bytes(Path(folder) / "portable.onnx", Path(folder) / "portable.onnx.data",
                         *(() if engine is None else (Path(engine),)))
    require_room(output, copied, "the repository (a copy of portable.onnx and any engine)")
    with writing(output):
        return write_repository(folder, output, spec, engine=engine, plugin=plugin, overwrite=overwrite)


@contextlib.contextmanager
def serve(repository: str | Path, *, http_port: int = 8000, grpc_port: int = 8001, workdir: str | Path | None = None,
          timeout_s: float = 120.0) -> Iterator[dict]:
    """Run the CPU tritonserver (nvidia-pytriton's) on a repository until the block ends; every check first.

    Yields {"models": names, "http", "grpc": addresses, "log": path, "process": the server's Popen}.
    Refuses, in one line each: a repository that is not valid, a tensorrt_plan model (needs a GPU and
    Triton's TensorRT backend), ports in use or equal, a --workdir that is a file or has no room.
    """
    import tempfile

    from freeact_export.deploy import triton_server
    from freeact_export.deploy.triton import validate_repository

    models = validate_repository(Path(repository))
    _require_ports(http_port, grpc_port)
    if workdir:
        _require_workdir(Path(workdir))
    engines = sorted(name for name, config in models.items() if config.platform == "tensorrt_plan")
    if engines:
        raise UserError(f"{repository} holds {', '.join(engines)} (tensorrt_plan), which needs a GPU and "
                        "Triton's TensorRT backend that this CPU server lacks; serve it in NVIDIA's Triton "
                        "container, or write the repository without an engine to serve it here")
    with contextlib.ExitStack() as stack:
        folder = workdir or stack.enter_context(tempfile.TemporaryDirectory(prefix="freeact-triton-"))
        server = stack.enter_context(triton_server.running_server(
            str(repository), folder, timeout_s=timeout_s, http_port=http_port, grpc_port=grpc_port))
        yield {**server, "models": sorted(models)}


def _require_ports(http: int, grpc: int) -> None:
    """Both ports free on loopback, and not the same one: tritonserver would otherwise fail after its
    models load, and serve would report it only at --timeout."""
    import socket

    if http == grpc:
        raise UserError(f"--http-port and --grpc-port are both {http}; give them different ports")
    for flag, number in (("--http-port", http), ("--grpc-port", grpc)):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds: TIME_WAIT is free
            try:
                sock.bind(("127.0.0.1", number))
            except OSError as err:
                raise UserError(f"{flag} {number}: 127.0.0.1:{number} cannot be used ({err.strerror}); choose another "
                                "port") from None


def _require_workdir(workdir: Path) -> None:
    if workdir.exists() and not workdir.is_dir():
        raise UserError(f"--workdir {workdir} is a file; give a folder (created when missing)")
    require_room(workdir / "tritonserver.log" if workdir.is_dir() else workdir)
