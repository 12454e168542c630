"""Standalone runner of a freeact-export edge bundle (copied into every bundle as runner.py).

    python runner.py 1 4093 17 29       # token ids of one request; prints the argmax token per position
    python runner.py --check            # only check this machine and the files against manifest.json

It needs Python 3.9+, numpy, TensorRT's Python package and an NVIDIA driver: nothing from
freeact-export. Before anything is loaded it compares the machine with the bundle's
manifest.json (TensorRT version, CUDA version, GPU compute capability) and every bundled
file with its sha256; on any difference it prints one line naming what differs and exits
with status 2. The machine is probed by `probe_machine()` of machine.py (bundled beside this
file; freeact-export's `build` reads the build machine through the same code) and judged by the
pure function `mismatches(manifest, machine, folder)`, so the decision can be tested with given
facts.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import sys
from pathlib import Path

if __package__:  # imported from freeact_export (build, bundle, tests)
    from freeact_export import machine as probes
else:  # run as a bundle's runner.py: the bundle carries machine.py beside it
    import machine as probes

MANIFEST = "manifest.json"
FORMAT = "freeact-export-bundle"
FORMAT_VERSION = 1
EXIT_REFUSED = 2


def _version_tuple(text: str) -> tuple[int, ...]:
    parts = []
    for part in str(text).split("."):
        digits = "".join(ch for ch in part if ch.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def mismatches(manifest: dict, machine: dict, folder: Path) -> list[str]:
    """What keeps this bundle from running on this machine: one phrase per difference, [] when none.

    Rules: every file listed in the manifest exists with its sha256; TensorRT is the version the
    engine was built with (a version-compatible engine: the same major version, not older); the
    driver supports the CUDA major version TensorRT was built for; GPU 0 has the compute
    capability the engine was built for (engines are specific to it).
    """
    problems = []
    if manifest.get("format") != FORMAT or manifest.get("format_version") != FORMAT_VERSION:
        return [f"{MANIFEST} is not a {FORMAT} manifest of version {FORMAT_VERSION}"]
    for name, expected in manifest["files"].items():
        path = Path(folder) / name
        if not path.is_file():
            problems.append(f"file {name} is missing")
        elif probes.sha256(path) != expected:
            problems.append(f"file {name} does not match its sha256 in {MANIFEST} (modified or corrupt)")
    trt = manifest["tensorrt"]
    built = trt["version"]
    if machine.get("tensorrt") is None:
        problems.append(f"TensorRT is not importable here (the engine needs TensorRT {built}"
                        f"{'' if trt.get('version_compatible') else ' exactly'}; "
                        f"{machine.get('tensorrt_why', 'import tensorrt failed')})")
    elif trt.get("version_compatible"):
        have, want = _version_tuple(machine["tensorrt"]), _version_tuple(built)
        if have[:1] != want[:1] or have < want:
            problems.append(f"TensorRT {machine['tensorrt']} here, the version-compatible engine needs "
                            f"TensorRT {want[0]}.x at {built} or later")
    elif _version_tuple(machine["tensorrt"]) != _version_tuple(built):
        problems.append(f"TensorRT {machine['tensorrt']} here, the engine was built with TensorRT {built} "
                        "(engines run only on the TensorRT version that built them)")
    cuda_major = manifest["cuda"].get("major")
    if machine.get("gpu") is None:
        gpu = manifest["gpu"]
        problems.append(f"no CUDA GPU here ({machine.get('why', 'none found')}; the engine needs "
                        f"{gpu['sm']}, built on {gpu['name']})")
    else:
        if cuda_major is not None and _version_tuple(machine.get("cuda_driver", "0"))[:1] < (cuda_major,):
            problems.append(f"the NVIDIA driver here supports CUDA {machine.get('cuda_driver')}, TensorRT "
                            f"{built} was built for CUDA {cuda_major}")
        if machine.get("sm") != manifest["gpu"]["sm"]:
            problems.append(f"GPU architecture {machine.get('sm')} here ({machine['gpu']}), the engine was built "
                            f"for {manifest['gpu']['sm']} ({manifest['gpu']['name']})")
    have_cuda = machine.get("tensorrt_cuda_major")
    if have_cuda is not None and cuda_major is not None and have_cuda != cuda_major:
        problems.append(f"the TensorRT package here is built for CUDA {have_cuda}, the engine's for CUDA {cuda_major}")
    return problems


class _Cuda:
    """Device memory and a stream through the CUDA driver API on the primary context (as TensorRT uses)."""

    def __init__(self) -> None:
        self.lib = ctypes.CDLL("libcuda.so.1")
        self._check(self.lib.cuInit(0), "cuInit")
        device, self.context = ctypes.c_int(), ctypes.c_void_p()
        self._check(self.lib.cuDeviceGet(ctypes.byref(device), 0), "cuDeviceGet")
        self._check(self.lib.cuDevicePrimaryCtxRetain(ctypes.byref(self.context), device), "cuDevicePrimaryCtxRetain")
        self._check(self.lib.cuCtxSetCurrent(self.context), "cuCtxSetCurrent")
        self.stream = ctypes.c_void_p()
        self._check(self.lib.cuStreamCreate(ctypes.byref(self.stream), 0), "cuStreamCreate")

    @staticmethod
    def _check(status: int, what: str) -> None:
        if status != 0:
            raise RuntimeError(f"{what} failed with CUDA driver error {status}")

    def alloc(self, nbytes: int) -> int:
        pointer = ctypes.c_uint64()
        self._check(self.lib.cuMemAlloc_v2(ctypes.byref(pointer), ctypes.c_size_t(max(nbytes, 1))), "cuMemAlloc")
        return pointer.value

    def to_device(self, pointer: int, array) -> None:
        self._check(self.lib.cuMemcpyHtoD_v2(ctypes.c_uint64(pointer), array.ctypes.data_as(ctypes.c_void_p),
                                             ctypes.c_size_t(array.nbytes)), "cuMemcpyHtoD")

    def to_host(self, array, pointer: int) -> None:
        self._check(self.lib.cuMemcpyDtoH_v2(array.ctypes.data_as(ctypes.c_void_p), ctypes.c_uint64(pointer),
                                             ctypes.c_size_t(array.nbytes)), "cuMemcpyDtoH")

    def synchronize(self) -> None:
        self._check(self.lib.cuStreamSynchronize(self.stream), "cuStreamSynchronize")

    def free(self, pointer: int) -> None:
        self.lib.cuMemFree_v2(ctypes.c_uint64(pointer))


def _feeds(engine, trt, token_ids: list[int]) -> dict:
    """One request: the token ids, a full attention mask, positions 0.., empty KV caches."""
    import numpy as np

    tokens = len(token_ids)
    feeds = {}
    for index in range(engine.num_io_tensors):
        name = engine.get_tensor_name(index)
        if engine.get_tensor_mode(name) != trt.TensorIOMode.INPUT:
            continue
        dtype = trt.nptype(engine.get_tensor_dtype(name))
        shape = list(engine.get_tensor_shape(name))
        if name == "input_ids":
            feeds[name] = np.asarray([token_ids], dtype=dtype)
        elif name == "attention_mask":
            feeds[name] = np.ones((1, tokens), dtype=dtype)
        elif name == "position_ids":
            feeds[name] = np.arange(tokens, dtype=dtype)[None]
        elif name.startswith("past_key_values."):
            shape[0], shape[2] = 1, 0
            feeds[name] = np.zeros([max(d, 0) for d in shape], dtype=dtype)
        else:
            raise RuntimeError(f"the engine has an input this runner cannot fill: {name} {shape}")
    return feeds


def run_engine(folder: Path, manifest: dict, token_ids: list[int]):
    """Load the plugin library, deserialize the engine, run one request; returns the logits [tokens, vocab]."""
    import numpy as np
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    registry = trt.get_plugin_registry()
    if not registry.load_library(str(folder / manifest["plugin_library"]["file"])):
        raise RuntimeError(f"TensorRT could not load the plugin library {manifest['plugin_library']['file']}")
    cuda = _Cuda()
    runtime = trt.Runtime(logger)
    if manifest["tensorrt"].get("version_compatible"):
        runtime.engine_host_code_allowed = True  # the plan carries the lean runtime; its hash was checked above
    engine = runtime.deserialize_cuda_engine((folder / manifest["engine"]["file"]).read_bytes())
    if engine is None:
        raise RuntimeError("TensorRT could not deserialize the engine (see its log above)")
    context = engine.create_execution_context()
    feeds = _feeds(engine, trt, token_ids)
    pointers = []
    try:
        for name, array in feeds.items():
            array = np.ascontiguousarray(array)
            context.set_input_shape(name, array.shape)
            pointer = cuda.alloc(array.nbytes)
            pointers.append(pointer)
            cuda.to_device(pointer, array)
            context.set_tensor_address(name, pointer)
        outputs = {}
        for index in range(engine.num_io_tensors):
            name = engine.get_tensor_name(index)
            if engine.get_tensor_mode(name) != trt.TensorIOMode.OUTPUT:
                continue
            array = np.empty(tuple(context.get_tensor_shape(name)), dtype=trt.nptype(engine.get_tensor_dtype(name)))
            pointer = cuda.alloc(array.nbytes)
            pointers.append(pointer)
            context.set_tensor_address(name, pointer)
            outputs[name] = (array, pointer)
        if not context.execute_async_v3(cuda.stream.value or 0):
            raise RuntimeError("TensorRT failed to enqueue the engine (see its log above)")
        cuda.synchronize()
        for array, pointer in outputs.values():
            cuda.to_host(array, pointer)
    finally:
        for pointer in pointers:
            cuda.free(pointer)
    return outputs["logits"][0][0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="runner.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("token_ids", nargs="*", type=int, help="token ids of one request")
    parser.add_argument("--bundle", default=str(Path(__file__).resolve().parent),
                        help="bundle folder (default: this script's folder)")
    parser.add_argument("--check", action="store_true", help="only check the machine and the files")
    args = parser.parse_args(argv)
    folder = Path(args.bundle)
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError) as err:
        print(f"runner.py: refused: cannot read {folder / MANIFEST}: {err}", file=sys.stderr)
        return EXIT_REFUSED
    problems = mismatches(manifest, probes.probe_machine(), folder)
    if problems:
        print(f"runner.py: refused: {'; '.join(problems)}", file=sys.stderr)
        return EXIT_REFUSED
    if args.check:
        print(f"bundle matches this machine ({manifest['gpu']['sm']}, TensorRT {manifest['tensorrt']['version']})")
        return 0
    if not args.token_ids:
        parser.error("give the token ids of one request")
    logits = run_engine(folder, manifest, args.token_ids)
    print(" ".join(str(int(i)) for i in logits.argmax(-1)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
