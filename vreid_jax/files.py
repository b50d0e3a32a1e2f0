"""Small file helpers: outputs are written atomically, so an interrupted run leaves no torn file."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from typing import IO

# Mode of every written file (mkstemp's own 0o600 would hide shared outputs from other users).
FILE_MODE = 0o644


@contextlib.contextmanager
def atomic_write(path: str, mode: str = "w") -> Iterator[IO]:
    """Yields a file (mode 'w' text or 'wb' bytes) whose content replaces `path` when the block ends.

    The content goes to a temporary file of a unique name (so concurrent writers never share one) in
    `path`'s folder, created if missing, then is renamed onto `path` in one step: readers see the old
    file or the whole new one. On any exception the temporary file is removed and `path` is untouched.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write: mode must be 'w' or 'wb', got {mode!r}.")
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_directory(path: str) -> Iterator[str]:
    """Yields a new temporary folder beside `path` that becomes `path` when the block ends.

    `path` must not exist, or be an empty folder: the rename replaces nothing else. On any exception
    the temporary folder and all it holds are removed and `path` is untouched, so a failed writer
    leaves nothing behind.
    """
    path = os.path.abspath(path)
    if os.path.exists(path) and (not os.path.isdir(path) or os.listdir(path)):
        raise FileExistsError(f"{path} exists and is not an empty folder.")
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=parent)
    try:
        yield tmp
        os.chmod(tmp, 0o755)  # mkdtemp's own 0o700 would hide the folder from other users.
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_json_atomic(path: str, obj, indent: int | None = 2) -> None:
    """Writes `obj` as JSON to `path` atomically (`atomic_write`)."""
    with atomic_write(path) as f:
        json.dump(obj, f, indent=indent)


def read_json(path: str, default=None):
    """The JSON content of `path`, or `default` when the file does not exist."""
    if not os.path.exists(path):
        return default
    with open(path) as f:
        return json.load(f)
