"""Checks made before a command's long work: room for its output, and windows its model can take.

Calibration and learning take minutes to hours; a read-only output folder, a full disk or a
window longer than the model's context found after them wastes all of it. These checks cost a
file probe, a statvfs and a config read.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from freeact_export.errors import UserError

# Below this a folder is full for anything this tool writes (a record, a lock, a marker).
MIN_FREE_BYTES = 64 * 1024
# Where a decoder's config records its context length (GPT-2 style configs: n_positions).
CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length")


def size_text(n: float) -> str:
    """Bytes for a person: 396.6 KB, 1.2 GB."""
    if n < 1000:
        return f"{n:.0f} bytes"
    for unit in ("KB", "MB", "GB", "TB"):
        n /= 1000
        if n < 1000 or unit == "TB":
            return f"{n:.1f} {unit}"
    raise AssertionError("unreachable")


def files_bytes(*paths: Path) -> int:
    """Total size of the files (and folders' files) that exist among `paths`."""
    total = 0
    for path in paths:
        if path.is_file():
            total += path.stat().st_size
        elif path.is_dir():
            total += sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return total


def require_room(path: str | Path, need_bytes: int = 0, what: str = "the output") -> None:
    """Refuse an output whose folder cannot take it: not a folder, not writable (probed with a real
    file, so a read-only mount and root's bypass of permissions both count right), or with less free
    space than `need_bytes`, a rough estimate of what will be written, named in the message."""
    path = Path(path)
    folder = path.parent
    if not folder.is_dir():
        if folder.exists():
            raise UserError(f"{folder} is a file, so output {path} cannot be made inside it; choose a path in a folder")
        raise UserError(f"the folder {folder} for output {path} does not exist; create it first")
    try:
        fd, probe = tempfile.mkstemp(prefix=".freeact-export-probe-", dir=folder)
    except OSError as err:
        raise UserError(f"cannot write in {folder} ({err.strerror}), where output {path} goes; choose a folder "
                        "you can write to") from None
    os.close(fd)
    os.unlink(probe)
    free = shutil.disk_usage(folder).free
    if free < MIN_FREE_BYTES:
        raise UserError(f"{folder} is full ({size_text(free)} free), where output {path} goes; free some space there "
                        "or choose another output folder")
    if free < need_bytes:
        raise UserError(f"{folder} has {size_text(free)} free, and about {size_text(need_bytes)} is needed for {what}; "
                        "free some space there or choose another output folder")


@contextlib.contextmanager
def writing(path: str | Path):
    """Name `path` in an OSError raised without a file name (write() on a disk that filled up meanwhile),
    so that the one line the CLI prints for it says which output could not be written."""
    try:
        yield
    except OSError as err:
        if err.filename is None:
            err.filename = str(path)
        raise


def require_checkpoint_folder(folder: str | Path) -> None:
    """A --checkpoint folder: a folder (made when missing) this process can write in."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise UserError(f"checkpoint {folder} is a file; --checkpoint takes a folder (created when missing)")
    require_room(folder / "group" if folder.is_dir() else folder)


def context_length(config_folder: Path | None) -> tuple[int, str, Path] | None:
    """(tokens, key, config path) of the context length a model's config.json records, or None."""
    if config_folder is None:
        return None
    path = config_folder / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    for scope in (config, config.get("text_config")) if isinstance(config, dict) else ():
        for key in CONTEXT_KEYS if isinstance(scope, dict) else ():
            value = scope.get(key)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value, key, path
    return None


def require_context(config_folder: Path | None, seqlen: int, bos: bool, windows: str, flag: str) -> None:
    """Refuse windows of `seqlen` tokens (plus the BOS token prefixed as context, where `bos`) longer
    than the model's context: past it a model's positions are untrained (or out of its table), and
    finding out takes the whole run.

    Args:
        windows: what the windows are for, e.g. "eval windows", "calibration windows".
        flag: the option that sets their length, named in the remedy.
    """
    found = context_length(config_folder)
    if found is None:
        return
    limit, key, path = found
    if seqlen + bos <= limit:
        return
    plus = " plus the BOS token before each" if bos else ""
    raise UserError(f"{windows} of {seqlen} tokens{plus} exceed the model's context of {limit} tokens ({key} in "
                    f"{path}); pass {flag} {limit - bos} or less")
