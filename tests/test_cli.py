"""The command line: config errors are one clear line, never a traceback.

`vreid_jax.main` runs in this process (`helpers.run_command`): the start of a real process is proved
by the console-script and recipe tests of the full tier."""

import importlib
import tomllib

from helpers import run_command

import vreid_jax.main


def _main(*args, cwd):
    return run_command(vreid_jax.main, *args, cwd=cwd)


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


def test_cli_runtime_errors_are_one_line(repo_root, tmp_path):
    """Problems a user can fix end the run with `error: ...` naming the key, file or folder."""
    broken = tmp_path / "broken.py"
    broken.write_text("def get_config(:\n")
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    tiny = ["--config", "configs/tiny.py", "--workdir", str(tmp_path / "run")]
    cases = [
        (["--config", str(broken), "--workdir", str(tmp_path / "w")], "cannot load the --config"),
        ([*tiny, "--config.data.name=market"], "config.data.name='market'"),
        (["--config", "configs/tiny.py", "--workdir", str(a_file)], "Cannot use --workdir"),
        (
            [
                *tiny,
                f"--config.data.data_dir={tmp_path / 'none'}",
                "--config.data.synthetic.enabled=false",
            ],
            "No built 'mars' dataset",
        ),
    ]
    for args, message in cases:
        proc = _main(*args, cwd=repo_root)
        assert proc.returncode != 0, args
        assert message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-2000:]


def test_command_modules_import_together():
    """The commands define their flags when run, not on import: one process (a notebook, a test
    session) can import them all."""
    import vreid_jax.deploy.export  # noqa: F401, PLC0415
    import vreid_jax.deploy.extract  # noqa: F401, PLC0415
    import vreid_jax.deploy.relink  # noqa: F401, PLC0415
    import vreid_jax.deploy.search  # noqa: F401, PLC0415
    import vreid_jax.main  # noqa: F401, PLC0415
    import vreid_jax.tools.summary  # noqa: F401, PLC0415


def test_console_scripts_name_each_command_main(repo_root):
    """The console scripts in pyproject.toml point at the commands' entry points."""
    scripts = tomllib.loads((repo_root / "pyproject.toml").read_text())["project"]["scripts"]
    commands = {"train", "extract", "search", "relink", "export"}
    assert set(scripts) == {f"vreid-{c}" for c in commands}
    for target in scripts.values():
        module, function = target.split(":")
        assert callable(getattr(importlib.import_module(module), function)), target
