"""Outputs that appear whole or not at all, and never over a user's file unasked."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from freeact_export.errors import UserError


def check_new_output(path: Path, overwrite: bool) -> None:
    """Refuse to touch an existing output unless the user asked for it."""
    if path.exists() and not overwrite:
        raise UserError(f"output {path} already exists; choose another path or pass --overwrite")
    if not path.parent.exists():
        raise UserError(f"the folder {path.parent} for output {path} does not exist; create it first")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


@contextlib.contextmanager
def atomic_path(path: Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling of `path` to write into; rename it to `path` on success.

    The sibling lives in the same folder so the final rename is atomic on one file system;
    on any failure (or Ctrl-C) it is deleted, so an interrupted run leaves nothing behind.
    Works for a file or a folder: the caller decides what it writes at the yielded path.
    """
    path = Path(path)
    check_new_output(path, overwrite)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    tmp.unlink()
    try:
        yield tmp
        if path.exists():  # only reachable with overwrite=True
            _remove(path)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            _remove(tmp)
