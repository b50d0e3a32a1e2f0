"""The harness and the command line: fake devices, config errors, logging outputs."""

import json
import os
import subprocess
import sys

import jax
import pytest

from vreid_jax import config_lib, files, logging_utils


def test_fake_devices_visible():
    assert jax.device_count() >= 4
    assert jax.default_backend() == "cpu"


def _main(*args, cwd):
    return subprocess.run(
        [sys.executable, "-m", "vreid_jax.main", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_unknown_key_is_an_error(repo_root, workdir):
    proc = _main(
        "--config",
        "configs/default.py",
        "--workdir",
        str(workdir),
        "--config.no_such_key=1",
        cwd=repo_root,
    )
    assert proc.returncode != 0
    assert "no_such_key" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_cli_missing_workdir_and_config_file(repo_root, workdir):
    proc = _main("--config", "configs/default.py", cwd=repo_root)
    assert proc.returncode != 0 and "--workdir" in proc.stderr and "Traceback" not in proc.stderr
    proc = _main("--config", "configs/no_such_file.py", "--workdir", str(workdir), cwd=repo_root)
    assert proc.returncode != 0 and "no_such_file.py" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_cli_bad_value_names_the_key(repo_root, workdir):
    proc = _main(
        "--config",
        "configs/default.py",
        "--workdir",
        str(workdir),
        "--config.mode=fly",
        cwd=repo_root,
    )
    assert proc.returncode != 0 and "config.mode" in proc.stderr


def test_parse_arg_types_and_errors():
    args = config_lib.parse_arg("model=gltr,split=3,quick", model="nl3d", split=0, quick=False)
    assert (args.model, args.split, args.quick) == ("gltr", 3, True)
    with pytest.raises(ValueError, match="Unknown config argument 'modle'"):
        config_lib.parse_arg("modle=gltr", model="nl3d")
    with pytest.raises(ValueError, match="not a int"):
        config_lib.parse_arg("split=x", split=0)


def test_epochs_to_steps():
    assert config_lib.epochs_to_steps(1.5, 20) == 30


def test_writer_writes_jsonl_and_tensorboard(workdir):
    writer = logging_utils.MetricWriter(str(workdir))
    writer.write_scalars(1, {"loss": 2.5, "lr": 3e-4})
    writer.write_scalars(2, {"loss": 2.0, "lr": 3e-4})
    writer.close()
    lines = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert lines == [{"step": 1, "loss": 2.5, "lr": 3e-4}, {"step": 2, "loss": 2.0, "lr": 3e-4}]
    events = list((workdir / "tensorboard").glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0


def test_progress_reports_rate_and_eta():
    progress = logging_utils.Progress(total_steps=10, every_steps=5)
    assert progress.update(3) is None
    report = progress.update(5)
    assert report["steps_per_sec"] > 0 and report["eta_sec"] >= 0


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
