"""The command line: config errors are one clear line, never a traceback."""

import subprocess
import sys


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
