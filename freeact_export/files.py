"""Outputs that appear whole or not at all, and never over anything freeact-export did not write.

Every output goes through `check_new_output` (early, before the slow work) and `atomic_path` (the
write). Together they
- refuse paths that are never an output: `.`, `..`, the current folder or a parent of it, `/`, a
  home folder;
- lock the output (`.NAME.lock` beside it, flock, holding this process's id) from the first check
  to the rename, so a second run to the same output fails at once naming the first;
- replace an existing output only with --overwrite and only when this tool wrote it: a folder
  holding a marker (`.freeact-export`, listing what was written) or a plan / rewritten folder's
  manifest.json, with nothing in it that neither lists; a JSON record stamped `written_by`;
- write under `.NAME.PID-XXXX.partial` and swap it in at the end, so an interrupted run (Ctrl-C,
  SIGTERM, SIGHUP through `interruptible`) leaves nothing half-written, and a partial left by a
  SIGKILLed process is recognised by its dead PID and cleared by the next run for that output.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import json
import os
import pwd
import re
import secrets
import shutil
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

from freeact_export import __version__
from freeact_export.errors import UserError

MARKER = ".freeact-export"
WRITTEN_BY = "freeact-export"
# plan and rewritten folders are recognised by their manifest.json (manifest.py), which lists their files
_MANIFEST, _MANIFEST_FORMATS = "manifest.json", ("freeact-export plan", "freeact-export rewritten folder")
# written into a rewritten folder after its manifest, by other commands: build's TensorRT timing cache
_ADDED_LATER = {"timing.cache"}
# a lock, partial or set-aside copy of an output nested in this one
_TRANSIENT = re.compile(r"\..+\.(lock|[^.]+\.(partial|replaced))")
_MAX_RECORD_BYTES = 64 * 2**20


# ---- paths that are never an output ----------------------------------------------------------

def _never_an_output(path: Path) -> str | None:
    """Why `path` may never be written over (None: it may)."""
    real = path.resolve()
    if real == Path(real.anchor):
        return "is the root folder"
    with contextlib.suppress(OSError):  # the working folder may have been deleted
        cwd = Path.cwd().resolve()
        if real == cwd:
            return "is the current folder"
        if real in cwd.parents:
            return "is a parent of the current folder"
    homes = {Path.home()} | {Path(entry.pw_dir) for entry in pwd.getpwall() if entry.pw_dir}
    if real in {home.resolve() for home in homes}:
        return "is a home folder"
    if path.name in ("", ".", ".."):
        return "is named by '.' or '..', not by its own name"
    return None


# ---- what this tool wrote --------------------------------------------------------------------

def stamped(record: dict) -> dict:
    """A JSON record as written to a file: stamped so that --overwrite may later replace it."""
    return {"written_by": WRITTEN_BY, **record}


def _is_stamped_record(path: Path) -> bool:
    if path.stat().st_size > _MAX_RECORD_BYTES:
        return False
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not isinstance(record, dict):
        return False
    environment = record.get("environment")
    # before the stamp, every record (eval --json) carried the writing version in its environment
    return record.get("written_by") == WRITTEN_BY or (isinstance(environment, dict) and "freeact_export" in environment)


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _written_entries(folder: Path) -> set[str] | None:
    """What the tool wrote into `folder` (relative posix paths, marker or manifest included), per
    its marker, its manifest or, from before markers, its record; None when it has none of them."""
    marker = _read_json(folder / MARKER)
    if isinstance(marker, dict) and marker.get("written_by") == WRITTEN_BY and isinstance(marker.get("entries"), list):
        return {str(e) for e in marker["entries"]} | {MARKER}
    return _manifest_entries(folder) or _legacy_entries(folder)


def _manifest_entries(folder: Path) -> set[str] | None:
    """A plan or rewritten folder's files per its manifest.json (which stands for the marker there)."""
    manifest = _read_json(folder / _MANIFEST)
    if not (isinstance(manifest, dict) and manifest.get("format") in _MANIFEST_FORMATS
            and isinstance(manifest.get("files"), dict)):
        return None
    files = {str(name) for name in manifest["files"]}
    folders = {parent.as_posix() for name in files for parent in Path(name).parents if parent != Path(".")}
    return files | folders | {_MANIFEST} | _ADDED_LATER


# What save_pretrained writes for a tokenizer: the rest of an export folder from before the marker.
_TOKENIZER_FILES = {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                    "vocab.json", "vocab.txt", "merges.txt", "tokenizer.model", "spiece.model", "chat_template.jinja",
                    "chat_template.json"}


def _legacy_entries(folder: Path) -> set[str] | None:
    """Folders written before the marker existed, known by the record each holds and the files it comes with."""
    def record(name: str, key: str, value: str) -> dict | None:
        data = _read_json(folder / name)
        return data if isinstance(data, dict) and data.get(key) == value else None

    if record("check.json", "kind", "check"):
        return {"check.json", "inputs.json", "outputs.json"}
    if record("build.json", "kind", "build"):
        return {"build.json", "model.plan"}
    export = record("export.json", "kind", "export")
    if export and isinstance(export.get("files"), list):
        return {str(f) for f in export["files"]} | {"export.json", "config.json", "generation_config.json"} \
            | _TOKENIZER_FILES
    bundle = record(_MANIFEST, "format", "freeact-export-bundle")
    if bundle and isinstance(bundle.get("files"), dict):
        return {str(f) for f in bundle["files"]} | {_MANIFEST}
    return None


def _foreign_content(folder: Path) -> str | None:
    """None when the tool wrote `folder` and everything in it; else why not."""
    written = _written_entries(folder)
    if written is None:
        return f"it holds neither the {MARKER} marker nor a freeact-export {_MANIFEST}"
    pending = [folder]
    while pending:
        current = pending.pop()
        for entry in os.scandir(current):
            rel = Path(entry.path).relative_to(folder).as_posix()
            is_dir = entry.is_dir(follow_symlinks=False)
            if rel in written:
                if is_dir:
                    pending.append(Path(entry.path))
            elif _TRANSIENT.fullmatch(entry.name):
                continue
            elif not (is_dir and _foreign_content(Path(entry.path)) is None):  # else an output nested in it
                return f"it holds {rel}, which freeact-export did not write"
    return None


def _foreign(path: Path, kind: str | None) -> str | None:
    """None when `path` is an output this tool wrote (of `kind`, 'file' or 'folder', when given); else why not."""
    if path.is_symlink():
        return "it is a link"
    if path.is_dir():
        if kind == "file":
            return "it is a folder and this output is a file"
        return _foreign_content(path)
    if not path.is_file():
        return "it is not a regular file"
    if kind == "folder":
        return "it is a file and this output is a folder"
    if not _is_stamped_record(path):
        return "it is not a JSON record written by freeact-export"
    return None


def _write_marker(folder: Path) -> None:
    """Leave the marker that lets --overwrite replace this folder later: it lists everything written."""
    entries = sorted(Path(root, name).relative_to(folder).as_posix()
                     for root, dirs, files in os.walk(folder) for name in (*dirs, *files))
    record = {"written_by": WRITTEN_BY, "freeact_export": __version__, "entries": entries}
    (folder / MARKER).write_text(json.dumps(record, indent=1) + "\n")


# ---- one writer per output -------------------------------------------------------------------

_locks: dict[Path, tuple[int, Path]] = {}  # output (parent resolved) -> (fd, lock file)
_active: set[Path] = set()  # this process's partials being written


def _key(path: Path) -> Path:
    return path.parent.resolve() / path.name


def _lock(path: Path) -> None:
    key = _key(path)
    if key in _locks:  # check_new_output, then atomic_path: one lock for the run
        return
    lock_file = key.parent / f".{key.name}.lock"
    while True:
        try:
            fd = os.open(lock_file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as err:
            why = f"cannot write in {path.parent} ({err.strerror}); choose a folder you can write to"
            raise UserError(why) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.pread(fd, 32, 0).decode(errors="replace").strip()
            os.close(fd)
            who = f" (pid {owner})" if owner.isdigit() else ""  # empty for the instant before it writes its pid
            raise UserError(f"output {path} is being written by another freeact-export run{who}; wait for it "
                            "to finish or choose another path") from None
        # its last holder may have removed the file between our open and flock: lock the one now there
        with contextlib.suppress(FileNotFoundError):
            if os.path.samestat(os.fstat(fd), os.stat(lock_file)):
                break
        os.close(fd)
    _locks[key] = (fd, lock_file)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    except OSError as err:  # a full disk: no lock file left behind, and a line that names the folder
        _unlock(path)
        raise UserError(f"cannot write in {path.parent} ({err.strerror}); free some space or choose "
                        "another folder") from None


def _unlock(path: Path) -> None:
    held = _locks.pop(_key(path), None)
    if held is not None:
        fd, lock_file = held
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock_file)  # while still locked: a run waiting on this file re-checks and takes a new one
        os.close(fd)


@atexit.register  # main() releases them on its way out; this catches API use
def release_locks() -> None:
    """Release every output lock this process holds (and remove the lock files)."""
    for key in list(_locks):
        _unlock(key)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a killed process its parent has not reaped yet is gone too
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return True


def _clear_stale(path: Path) -> None:
    """Remove what runs killed outright (SIGKILL, power loss) left for this output; only with its lock held."""
    pattern = re.compile(rf"\.{re.escape(path.name)}\.(\d+)-[0-9a-f]+\.(partial|replaced)")
    for entry in os.scandir(path.parent):
        match = pattern.fullmatch(entry.name)
        leftover = path.parent / entry.name
        if match is None or leftover in _active or (_alive(int(match[1])) and int(match[1]) != os.getpid()):
            continue
        if match[2] == "replaced" and not os.path.lexists(path):
            os.rename(leftover, path)  # killed between the swap's two renames: the previous output goes back
        else:
            _remove(leftover)


def _sibling(path: Path, what: str) -> Path:
    while True:
        candidate = path.parent / f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.{what}"
        if not os.path.lexists(candidate):
            return candidate


# ---- the two entry points --------------------------------------------------------------------

def check_new_output(path: Path, overwrite: bool, kind: str | None = None) -> None:
    """Refuse an output path unless it is new, or (with --overwrite) an output this tool wrote; lock it.

    `kind` ('file' or 'folder') refuses an existing output of the other kind early; atomic_path
    checks it again once it knows what was written. The lock is held until atomic_path finishes
    or the process ends (release_locks).
    """
    path = Path(path)
    never = _never_an_output(path)
    if never:
        raise UserError(f"output {path} {never}, which freeact-export never writes over (--overwrite or not); "
                        "name a new file or folder for the output")
    if not path.parent.is_dir():
        raise UserError(f"the folder {path.parent} for output {path} does not exist; create it first")
    _lock(path)
    try:
        _clear_stale(path)
        if not os.path.lexists(path):
            return
        foreign = _foreign(path, kind)
        if foreign and overwrite:
            raise UserError(f"--overwrite replaces only what freeact-export wrote, and {path} is not that ({foreign}); "
                            "choose another path or move it away first")
        if foreign:
            raise UserError(f"output {path} already exists and freeact-export did not write it ({foreign}); "
                            "choose another path")
        if not overwrite:
            raise UserError(f"output {path} already exists; choose another path or pass --overwrite")
    except BaseException:
        _unlock(path)
        raise


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif os.path.lexists(path):
        path.unlink()


@contextlib.contextmanager
def atomic_path(path: Path, overwrite: bool = False, kind: str | None = None) -> Iterator[Path]:
    """Yield a temporary sibling of `path` to write into; put it in place of `path` on success.

    The sibling lives in the same folder so the final rename is atomic on one file system; on
    any failure (Ctrl-C, SIGTERM and SIGHUP under `interruptible`) it is deleted, so an
    interrupted run leaves nothing behind. Works for a file or a folder: the caller decides what
    it writes at the yielded path. A folder gets the marker that lets --overwrite replace it
    later (plan and rewritten folders have their manifest instead). An existing output (allowed
    by check_new_output) is renamed aside, the new one renamed in, then the old deleted; if the
    second rename fails the old one goes back.
    """
    path = Path(path)
    check_new_output(path, overwrite, kind)
    tmp, aside = _sibling(path, "partial"), None
    _active.add(tmp)
    try:
        yield tmp
        is_folder = tmp.is_dir()
        if is_folder and _manifest_entries(tmp) is None:
            _write_marker(tmp)
        with _signals_deferred():  # a signal between the renames waits until both are done
            if os.path.lexists(path):  # only reachable with overwrite=True
                check_new_output(path, overwrite, "folder" if is_folder else "file")  # still ours, same kind
                if not is_folder and path.is_file():
                    os.replace(tmp, path)  # one file over another: atomic as it is
                    return
                aside = _sibling(path, "replaced")
                os.rename(path, aside)
            try:
                os.rename(tmp, path)
            except BaseException:
                if aside is not None:
                    os.rename(aside, path)
                    aside = None
                raise
    finally:
        _active.discard(tmp)
        for leftover in (tmp, aside):
            if leftover is not None:
                _remove(leftover)
        _unlock(path)


# ---- signals ---------------------------------------------------------------------------------

class Interrupted(KeyboardInterrupt):
    """SIGINT, SIGTERM or SIGHUP under `interruptible`: unwinds like Ctrl-C, so every cleanup runs."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


class _SignalState:
    stopping: int | None = None  # the signal being acted on: later ones must not cut its cleanup short
    deferring = 0
    pending: int | None = None


def _on_signal(signum, frame) -> None:
    if _SignalState.stopping is not None:
        return
    if _SignalState.deferring:
        _SignalState.pending = signum
        return
    _SignalState.stopping = signum
    raise Interrupted(signum)


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    _SignalState.deferring += 1
    try:
        yield
    finally:
        _SignalState.deferring -= 1
        if not _SignalState.deferring and _SignalState.pending is not None:
            _SignalState.stopping, _SignalState.pending = _SignalState.pending, None
            raise Interrupted(_SignalState.stopping)


@contextlib.contextmanager
def interruptible(signals=(signal.SIGINT, signal.SIGTERM, signal.SIGHUP)) -> Iterator[None]:
    """Run a command so that SIGINT, SIGTERM and SIGHUP raise Interrupted in it, as Ctrl-C raises
    KeyboardInterrupt: partial outputs are removed on the way out. Releases the output locks at the end.

    A signal ignored on entry stays ignored (nohup, a background job without SIGINT).
    """
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for signum in signals:
            handler = signal.getsignal(signum)
            if handler is not signal.SIG_IGN:
                previous[signum] = signal.SIG_DFL if handler is None else handler
                signal.signal(signum, _on_signal)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        _SignalState.stopping = _SignalState.pending = None
        _SignalState.deferring = 0
        release_locks()


def interrupted_message(signum: int) -> str:
    how = "interrupted" if signum == signal.SIGINT else f"stopped by {signal.Signals(signum).name}"
    return f"{how}; partial outputs were removed"
