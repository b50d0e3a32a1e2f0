"""Outputs are written atomically: whole or not at all, never a shared temporary file."""

import os
import pathlib

import pytest

from vreid_jax import files


def test_atomic_write_replaces_whole_or_not_at_all(tmp_path):
    path = tmp_path / "new" / "out.json"
    files.write_json_atomic(str(path), {"a": 1})
    assert files.read_json(str(path)) == {"a": 1}
    assert os.stat(path).st_mode & 0o777 == files.FILE_MODE
    with pytest.raises(RuntimeError, match="interrupted"), files.atomic_write(str(path)) as f:
        f.write("{partial")
        raise RuntimeError("interrupted")
    assert files.read_json(str(path)) == {"a": 1}  # Untouched, and no temporary file left.
    with (
        files.atomic_write(str(path), "wb") as first,
        files.atomic_write(str(path), "wb") as second,
    ):
        first.write(b"1")
        second.write(b"2")
    # Concurrent writers never share a temporary file: the last to finish wins, whole.
    assert path.read_bytes() == b"1"
    assert os.listdir(path.parent) == ["out.json"]


def test_atomic_directory_appears_whole_or_not_at_all(tmp_path):
    path = tmp_path / "workdir"
    with pytest.raises(RuntimeError, match="interrupted"), files.atomic_directory(str(path)) as d:
        (pathlib.Path(d) / "config.json").write_text("{}")
        raise RuntimeError("interrupted")
    assert os.listdir(tmp_path) == []  # Neither the folder nor the temporary one.
    path.mkdir()  # An empty folder is replaced; one with anything in it is not.
    with files.atomic_directory(str(path)) as d:
        (pathlib.Path(d) / "config.json").write_text("{}")
        assert not (path / "config.json").exists()
    assert os.listdir(tmp_path) == ["workdir"] and os.listdir(path) == ["config.json"]
    assert os.stat(path).st_mode & 0o777 == 0o755
    refused = pytest.raises(FileExistsError, match="not an empty folder")
    with refused, files.atomic_directory(str(path)):
        pass
