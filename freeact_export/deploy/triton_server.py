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
    `<venv>/triton-stub-packages` (tools/setup.sh) ahead of the venv's site-packages;
  - the Python backend starts each model's stub with `bash -c "exec STUB MODEL_DIR ... BACKEND_DIR"`,
    the paths unquoted (python_backend's stub_launcher.cc), and the stub's embedded Python decodes
    paths as ASCII: a space splits a path (the stub dies in std::stol on a shifted argument) and a
    non-ASCII letter fails the model's load (UnicodeEncodeError). So the server is given only paths
    of shell-safe ASCII characters: where the repository's or the backend folder's path is not one,
    a link with a safe name in a temporary folder stands in for it (removed when the server stops).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from freeact_export.errors import UserError

STUB_PACKAGES_ENV = "FREEACT_TRITON_STUB_PACKAGES"
_INSTALL_HINT = "run 'bash tools/setup.sh' (it installs nvidia-pytriton==0.7.0 with --no-deps)"
# What the Python backend's unquoted `bash -c` command line and the stub's ASCII file names take.
_SAFE_PATH = re.compile(r"[A-Za-z0-9._/+-]+")
# Lines a CPU-only server always logs as errors or warnings; never the reason it failed.
_LOG_NOISE = ("CudaDriverHelper", "CUDA driver version is insufficient", "Unable to allocate pinned",
              "unable to create stream")


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


def is_safe_path(path: str | Path) -> bool:
    """Whether tritonserver's Python backend can take this path as it is (see the module docstring)."""
    return bool(_SAFE_PATH.fullmatch(str(path)))


def _safe_folder() -> Path:
    """A new temporary folder whose path the Python backend takes (TMPDIR's, else /tmp)."""
    for base in dict.fromkeys((tempfile.gettempdir(), "/tmp")):
        if is_safe_path(base) and os.access(base, os.W_OK | os.X_OK):
            return Path(tempfile.mkdtemp(prefix="freeact-triton-", dir=base))
    raise UserError(f"tritonserver's Python backend cannot take paths with spaces or non-ASCII letters and "
                    f"the temporary folder {tempfile.gettempdir()} has such a path (or /tmp is not writable); "
                    "set TMPDIR to a writable folder whose path has only ASCII letters, digits and . _ + - /")


@contextlib.contextmanager
def running_server(repository: str | Path, workdir: str | Path, timeout_s: float = 60.0,
                   http_port: int | None = None, grpc_port: int | None = None) -> Iterator[dict]:
    """Start tritonserver on loopback (free ports unless given); yield {'http': 'host:port', 'grpc': ...,
    'log': path, 'pid': int, 'process': Popen, 'repository': the path the server was given}.

    The server runs in its own process group, which is killed on exit (the Python stubs are
    its children), so nothing outlives the block. A repository or workdir whose path has a space,
    a non-ASCII letter or a shell character is served through links in a temporary folder, removed
    on exit. UserError (with the log's reason) when the server exits or is not ready within timeout_s.
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    repository = Path(repository).resolve()
    links: Path | None = None
    try:
        if not is_safe_path(repository):
            links = _safe_folder()
            (links / "repository").symlink_to(repository, target_is_directory=True)
            repository = links / "repository"
        backends = workdir.resolve() / "backends"
        if not is_safe_path(backends):
            links = links or _safe_folder()
            backends = links / "backends"
        backend_directory(backends)
        http_port, grpc_port = http_port or free_port(), grpc_port or free_port()
        log = workdir / "tritonserver.log"
        command = server_command(repository, backends, http_port, grpc_port)
        with open(log, "wb") as sink:
            process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=server_environment(),
                                       start_new_session=True)
        try:
            _wait_ready(process, f"127.0.0.1:{http_port}", log, timeout_s)
            yield {"http": f"127.0.0.1:{http_port}", "grpc": f"127.0.0.1:{grpc_port}", "log": log,
                   "pid": process.pid, "process": process, "repository": repository}
        finally:
            _stop(process)
    finally:
        if links is not None:  # the links only: rmtree does not follow them into the repository
            shutil.rmtree(links, ignore_errors=True)


def _wait_ready(process: subprocess.Popen, http: str, log: Path, timeout_s: float) -> None:
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise UserError(f"tritonserver exited with status {process.returncode}: "
                            f"{log_reason(log) or 'no error in its log'} (log: {log})")
        reason = log_reason(log, crashes_only=True)
        if reason:  # a dead stub leaves the server waiting for it until its own timeout
            raise UserError(f"tritonserver could not start its models: {reason} (log: {log})")
        try:
            with urllib.request.urlopen(f"http://{http}/v2/health/ready", timeout=1) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    reason = log_reason(log)
    raise UserError(f"tritonserver not ready after {timeout_s:.0f} s: "
                    f"{reason or 'its models are still loading (no error in its log); allow more time'} "
                    f"(log: {log})")


def _message(line: str) -> str:
    """The message of a log line `E1207 08:59:56.347 3828 file.cc:642] "text\\n..."`: its first line."""
    _, sep, text = line.partition('] "')
    text = text if sep else line
    return text.split("\\n")[0].rstrip('"').strip()


def log_reason(log: Path, crashes_only: bool = False) -> str | None:
    """Why tritonserver failed, from its log: a crashed Python stub, the first model that failed to
    load, the server's own error, else the last error line that is not CPU-only noise; None if none."""
    lines = log.read_text(errors="replace").splitlines() if log.is_file() else []
    for i, line in enumerate(lines):
        if line.startswith("terminate called"):
            what = next((n.strip() for n in lines[i + 1:i + 3] if n.strip().startswith("what():")), "")
            return f"a Python backend stub crashed ({line.strip()}{', ' + what if what else ''})"
    if crashes_only:
        return None
    failed: dict[str, str] = {}  # model → its error (an info line repeats the name without the reason)
    for line in lines:
        match = re.search(r"failed to load '([^']+)' version", line)
        if match and line.startswith("E"):
            failed.setdefault(match.group(1), _message(line))
    if failed:
        more = f" ({len(failed) - 1} more failed to load)" if len(failed) > 1 else ""
        return next(iter(failed.values())) + more
    errors = [line for line in lines if (line.startswith("E") or line.startswith("error:"))
              and not any(noise in line for noise in _LOG_NOISE)]
    return _message(errors[-1]) if errors else None


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
