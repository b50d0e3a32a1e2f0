"""Small file helpers: outputs are written atomically, so an interrupted run leaves no torn file."""

from __future__ import annotations

import json
import os


def write_json_atomic(path: str, obj, indent: int | None = 2) -> None:
    """Writes `obj` as JSON to `path` via a temporary file and an atomic rename."""
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=indent)
    os.replace(tmp, path)


def read_json(path: str, default=None):
    """The JSON content of `path`, or `default` when the file does not exist."""
    if not os.path.exists(path):
        return default
    with open(path) as f:
        return json.load(f)
