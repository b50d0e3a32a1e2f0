"""The build and stats command lines, and the statistics check."""

import importlib
import os
import re
import subprocess
import sys

import pytest
from helpers import run_command

from data_prep import mars, stats, synthetic

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(module, *args):
    """`python -m <module> <args>`, in this process."""
    return run_command(importlib.import_module(module), *args, cwd=REPO)


def _subprocess(*args):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run(
        [sys.executable, "-m", *args], capture_output=True, text=True, cwd=REPO, env=env
    )


def test_build_then_stats_cli(tmp_path):
    raw, data_dir = str(tmp_path / "raw"), str(tmp_path / "tfds")
    synthetic.generate(
        "mars", raw, num_ids=2, tracklets_per_id=2, min_len=2, max_len=3, height=32, width=16
    )
    built = _run(
        "data_prep.build", "--dataset", "mars", "--manual_dir", raw, "--data_dir", data_dir
    )
    assert built.returncode == 0, built.stderr
    assert built.stdout.strip().endswith(os.path.join("mars", "1.0.0"))
    table = _run("data_prep.stats", "--dataset", "mars", "--data_dir", data_dir, "--nocheck")
    assert table.returncode == 0, table.stderr
    assert "subset   | # ids | # tracklets" in table.stdout and "gallery" in table.stdout
    # A synthetic MARS is not MARS: the verified counts do not match, and the exit status says so.
    checked = _run("data_prep.stats", "--dataset", "mars", "--data_dir", data_dir)
    assert checked.returncode == 1 and "MISMATCH: train tracklets" in checked.stdout


@pytest.mark.slow
def test_build_cli_reports_bad_input_without_a_traceback(tmp_path):
    """In a process of its own, as a user runs it (the other command tests run in this one)."""
    result = _subprocess(
        "data_prep.build",
        "--dataset",
        "mars",
        "--manual_dir",
        str(tmp_path),
        "--data_dir",
        str(tmp_path / "out"),
    )
    assert result.returncode != 0
    assert "error: Missing" in result.stderr and "Traceback" not in result.stderr


def _rows(known):
    return [
        {
            "split": s,
            "ids": 0,
            "tracklets": 0,
            "frames": 0,
            "min_len": 0,
            "max_len": 0,
            "junk": 0,
            **known.get(s, {}),
        }
        for s in ("train", "query", "gallery")
    ]


def test_check_is_exact_for_verified_counts():
    rows = _rows(mars.VERIFIED_STATS)
    assert stats.check("mars", rows) == ([], [])
    rows[2]["junk"] = 869
    errors, warnings = stats.check("mars", rows)
    assert errors == ["gallery junk: 869, expected 870 (verified, data_prep.mars)"]
    assert warnings == []


def test_check_only_warns_for_unverified_counts():
    from data_prep import dukev

    rows = _rows(dukev.VERIFIED_STATS)
    errors, warnings = stats.check("dukev", rows)
    assert errors == [] and len(warnings) == 3  # the single-source frame counts


def test_importing_data_prep_pulls_in_neither_jax_nor_the_trainer():
    code = (
        "import sys; import data_prep.build, data_prep.reader, data_prep.stats, "
        "data_prep.synthetic, data_prep.builders; "
        "print(sorted(m for m in ('jax', 'vreid_jax', 'vreid_jax.training.loop') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert result.stdout.strip() == "[]", result.stderr


def test_build_and_read_without_network(tmp_path, monkeypatch):
    import socket

    from data_prep import build, reader

    def no_network(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    raw, data_dir = str(tmp_path / "raw"), str(tmp_path / "tfds")
    synthetic.generate(
        "ilidsvid", raw, num_ids=2, tracklets_per_id=1, min_len=2, max_len=3, height=32, width=16
    )
    build.build("ilidsvid", raw, data_dir)
    assert len(list(reader.read_split("ilidsvid", data_dir, "gallery"))) == 1


def test_data_prep_never_imports_vreid_jax():
    """The packages depend one way only: vreid_jax -> data_prep."""
    folder = os.path.join(REPO, "data_prep")
    for name in sorted(os.listdir(folder)):
        if name.endswith(".py"):
            with open(os.path.join(folder, name)) as f:
                source = f.read()
            assert not re.search(r"^\s*(from|import)\s+vreid_jax\b", source, re.M), name


def test_build_cli_errors_are_one_line(tmp_path):
    raw = str(tmp_path / "raw")
    os.makedirs(raw)
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")
    for args, message in (
        (["--resize", "256by128"], "error: --resize expects HxW"),
        (["--data_dir", str(not_a_folder)], f"error: Cannot create data_dir '{not_a_folder}'"),
    ):
        flags = {"--dataset": "mars", "--manual_dir": raw, "--data_dir": str(tmp_path / "out")}
        flags.update(dict(zip(args[::2], args[1::2], strict=True)))
        result = _run("data_prep.build", *[x for kv in flags.items() for x in kv])
        assert result.returncode != 0, args
        assert message in result.stderr and "Traceback" not in result.stderr, result.stderr


def test_two_builds_of_one_dataset_never_overlap(tmp_path):
    """A second build into the same data_dir is refused while the first runs (it used to delete the
    first one's temporary folder)."""
    from data_prep import build, locks  # noqa: PLC0415
    from data_prep.index import DataPrepError  # noqa: PLC0415

    data_dir = str(tmp_path / "out")
    with (
        locks.exclusive(data_dir, ".mars.build.lock", "a build in this test"),
        pytest.raises(DataPrepError, match=rf"in use by pid {os.getpid()}"),
    ):
        build.build("mars", str(tmp_path), data_dir)
