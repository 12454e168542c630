"""A local Triton Inference Server (CPU) from the nvidia-pytriton wheel, for tests and trying a repository.

The wheel carries `tritonserver` (2.51), the Python backend and one Python-backend stub per
Python version; only those files are used (pytriton itself is never imported: its metadata
pins numpy<2). Facts that shape the launch:
  - the binary's libraries lie in the wheel's `nvidia_pytriton.libs` (LD_LIBRARY_PATH);
  - the backend directory must hold the stub for this Python next to libtriton_python.so,
    so a small folder of links is made;
  - the stub embeds the system's libpython3.X and ignores PYTHONPATH (our model.py files put
    PYTHONPATH's entries on sys.path themselves), and was built against numpy 1.x: with numpy 2
    its tensors come out wrong (the array descriptor layout changed), so a numpy 1.26 lives in
    `<venv>/triton-stub-packages` (tools/setup.sh) ahead of the venv's site-packages.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from collections.abc import Iterator
from pathlib import Path

from freeact_export.errors import UserError

STUB_PACKAGES_ENV = "FREEACT_TRITON_STUB_PACKAGES"
_INSTALL_HINT = "run 'bash tools/setup.sh' (it installs nvidia-pytriton==0.7.0 with --no-deps)"


def _pytriton_dir() -> Path:
    spec = importlib.util.find_spec("pytriton")  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"the tritonserver binary comes from the nvidia-pytriton wheel, which is not installed; "
                        f"{_INSTALL_HINT}")
    return Path(next(iter(spec.submodule_search_locations)))


def tritonserver_binary() -> Path:
    path = _pytriton_dir() / "tritonserver" / "bin" / "tritonserver"
    if not path.is_file():
        raise UserError(f"{path} is missing; reinstall nvidia-pytriton ({_INSTALL_HINT})")
    return path


def stub_packages() -> Path | None:
    """The folder with numpy 1.x for the Python stub (None where this Python's numpy is 1.x already)."""
    import numpy

    if int(numpy.__version__.split(".")[0]) < 2:
        return None
    path = Path(os.environ.get(STUB_PACKAGES_ENV, Path(sys.prefix) / "triton-stub-packages"))
    if not (path / "numpy").is_dir():
        raise UserError(f"Triton's Python stub needs numpy 1.x and {path} holds none; install it with "
                        f"'pip install --no-deps --target {path} numpy==1.26.4' (tools/setup.sh does) or set "
                        f"{STUB_PACKAGES_ENV}")
    return path


def backend_directory(folder: Path) -> Path:
    """Make `folder/python/` hold the Python backend with this Python's stub (symbolic links); return folder."""
    root = _pytriton_dir() / "tritonserver"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = root / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file():
        raise UserError(f"nvidia-pytriton has no Python-backend stub for Python {version}")
    python = Path(folder) / "python"
    python.mkdir(parents=True, exist_ok=True)
    for source in (*sorted((root / "backends" / "python").glob("*.*")), stub):
        link = python / source.name
        if not link.exists():
            link.symlink_to(source)
    return Path(folder)


def server_environment() -> dict[str, str]:
    """The environment tritonserver runs in: its libraries, and the Python paths our models need."""
    env = dict(os.environ)
    libs = str(_pytriton_dir().parent / "nvidia_pytriton.libs")
    env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (libs, env.get("LD_LIBRARY_PATH")) if p)
    paths = [str(p) for p in (stub_packages(), sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"])
             if p is not None]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    return env


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def server_command(repository: Path, backends: Path, http_port: int, grpc_port: int) -> list[str]:
    return [str(tritonserver_binary()), f"--model-repository={repository}", f"--backend-directory={backends}",
            "--http-address=127.0.0.1", f"--http-port={http_port}",
            "--grpc-address=127.0.0.1", f"--grpc-port={grpc_port}",
            "--allow-metrics=false", "--exit-timeout-secs=3", "--log-verbose=0"]


@contextlib.contextmanager
def running_server(repository: str | Path, workdir: str | Path, timeout_s: float = 60.0,
                   http_port: int | None = None, grpc_port: int | None = None) -> Iterator[dict]:
    """Start tritonserver on loopback (free ports unless given); yield {'http': 'host:port', 'grpc': ...,
    'log': path, 'pid': int, 'process': Popen}.

    The server runs in its own process group, which is killed on exit (the Python stubs are
    its children), so nothing outlives the block. UserError (with the log's tail) when the
    server exits or is not ready within timeout_s.
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    backends = backend_directory(workdir / "backends")
    http_port, grpc_port = http_port or free_port(), grpc_port or free_port()
    log = workdir / "tritonserver.log"
    command = server_command(Path(repository).resolve(), backends, http_port, grpc_port)
    with open(log, "wb") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=server_environment(),
                                   start_new_session=True)
    try:
        _wait_ready(process, f"127.0.0.1:{http_port}", log, timeout_s)
        yield {"http": f"127.0.0.1:{http_port}", "grpc": f"127.0.0.1:{grpc_port}", "log": log, "pid": process.pid,
               "process": process}
    finally:
        _stop(process)


def _wait_ready(process: subprocess.Popen, http: str, log: Path, timeout_s: float) -> None:
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise UserError(f"tritonserver exited with status {process.returncode}: {_tail(log)}")
        try:
            with urllib.request.urlopen(f"http://{http}/v2/health/ready", timeout=1) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    raise UserError(f"tritonserver not ready after {timeout_s:.0f} s: {_tail(log)}")


def _tail(log: Path, lines: int = 1) -> str:
    text = log.read_text(errors="replace") if log.is_file() else ""
    errors = [line for line in text.splitlines() if line.startswith("E") or "error" in line.lower()]
    return " | ".join((errors or text.splitlines() or ["(no output)"])[-lines:])


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM to the server (it unloads its models and reaps its stubs), then SIGKILL to what is left."""
    with contextlib.suppress(ProcessLookupError):
        process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError):  # the stubs, or the server itself if it hung
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)
