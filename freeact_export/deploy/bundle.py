"""`freeact-export bundle DIR -o BUNDLE`: an edge bundle, a plain folder that runs where it was built for.

    BUNDLE/
      model.plan                   the TensorRT engine (from 'freeact-export build')
      libfreeact_trt_plugins.so    the plugin library the engine was built with
      build.json                   the build record
      manifest.json                versions, GPU architecture, sha256 of every file and of the sources
      runner.py                    standalone runner (deploy/bundle_runner.py): checks, then runs
      machine.py                   the machine probes runner.py imports (machine.py)

A folder, not an archive: the runner checks and runs it in place, and `tar czf` packs it for
transport without this tool. The manifest names what the engine depends on (TensorRT version and
whether the engine is version-compatible, the CUDA major version, the GPU's sm_XY) and the
sha256 of every bundled file and of its sources (plugin.onnx, plan/ files), so a copy can be
traced back to the quantized model it came from.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from freeact_export import __version__, machine
from freeact_export.deploy import bundle_runner
from freeact_export.deploy.bundle_runner import FORMAT, FORMAT_VERSION, MANIFEST
from freeact_export.errors import UserError
from freeact_export.files import atomic_path, check_new_output
from freeact_export.machine import sha256
from freeact_export.rewrite.folder import PLAN_DIR, PLUGIN_GRAPH, load_rewritten
from freeact_export.runtime import trt_engine

RUNNER = "runner.py"
PROBES = "machine.py"  # runner.py imports it: the machine facts, read as `build` reads them


def copy_runner(folder: Path) -> None:
    """runner.py and the machine probes it imports, into a bundle folder."""
    shutil.copy2(bundle_runner.__file__, Path(folder) / RUNNER)
    shutil.copy2(machine.__file__, Path(folder) / PROBES)


def make_manifest(build: dict, files: dict[str, str], sources: dict[str, str], engine_file: str,
                  library_file: str) -> dict:
    """The manifest from a build record and the sha256 of the bundled files and of the sources."""
    return {
        "format": FORMAT, "format_version": FORMAT_VERSION, "freeact_export": __version__,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "tensorrt": {k: build["tensorrt"][k] for k in ("version", "version_compatible", "exclude_lean_runtime")},
        "cuda": dict(build["cuda"]),
        "gpu": dict(build["gpu"]),
        "engine": {"file": engine_file, "fp16": build["tensorrt"].get("fp16"), "profile": build["profile"]},
        "plugin_library": {"file": library_file},
        "files": files,
        "sources": sources,
    }


def source_hashes(folder: Path) -> dict[str, str]:
    """sha256 of the model (plugin.onnx, its external data) and of the plan's files."""
    names = [PLUGIN_GRAPH, *(p.name for p in folder.glob(PLUGIN_GRAPH + ".data"))]
    names += sorted(f"{PLAN_DIR}/{p.name}" for p in (folder / PLAN_DIR).iterdir() if p.is_file())
    return {name: sha256(folder / name) for name in names}


def bundle(folder: str | Path, output: str | Path, engine: str | Path | None = None, *,
           overwrite: bool = False) -> dict:
    """Pack engine + plugin library + build record + manifest + runner into the folder `output`.

    Args:
        folder: a folder written by `freeact-export MODEL.onnx`.
        output: the bundle folder to create.
        engine: the engine folder (default DIR/engine, written by `freeact-export build`).
        overwrite: replace an existing bundle folder.

    Raises:
        UserError: no engine (build needs TensorRT and a GPU), or the plugin library or plugin.onnx
            differ from the ones the engine was built from.
    """
    path, _, _ = load_rewritten(folder)
    out = Path(output)
    check_new_output(out, overwrite)
    engine_dir = Path(engine) if engine is not None else trt_engine.default_engine_dir(path)
    build = trt_engine.read_build_record(engine_dir)
    if sha256(path / PLUGIN_GRAPH) != build["plugin_graph_sha256"]:
        raise UserError(f"{path / PLUGIN_GRAPH} changed since the engine in {engine_dir} was built; rebuild it")
    library = trt_engine.plugin_library_for(build)
    with atomic_path(out, overwrite) as tmp:
        tmp.mkdir()
        shutil.copy2(engine_dir / trt_engine.ENGINE_FILE, tmp / trt_engine.ENGINE_FILE)
        shutil.copy2(library, tmp / library.name)
        shutil.copy2(engine_dir / trt_engine.BUILD_RECORD, tmp / trt_engine.BUILD_RECORD)
        copy_runner(tmp)
        files = {p.name: sha256(p) for p in sorted(tmp.iterdir())}
        manifest = make_manifest(build, files, source_hashes(path), trt_engine.ENGINE_FILE, library.name)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest
