"""Helpers shared by the tests (conftest.py holds the fixtures and the harness set-up)."""

import fcntl
import os
import shutil
import sys

import numpy as np


def tiny_config(model="nl3d", **overrides):
    """configs/tiny.py for `model`, with dotted-key overrides such as `{"input.clip_len": 2}`."""
    from configs import tiny  # noqa: PLC0415  (after conftest has set up jax)

    config = tiny.get_config(f"model={model}")
    config.update_from_flattened_dict(overrides)
    return config


def random_batches(config, count: int, num_classes: int, seed: int = 0) -> list[dict]:
    """`count` training batches of random uint8 clips with P x K labels drawn from `num_classes`:
    the same numpy batches for every device layout."""
    rng = np.random.default_rng(seed)
    p, k = config.input.num_ids_per_batch, config.input.num_instances
    shape = (p * k, config.input.clip_len, config.input.height, config.input.width, 3)
    return [
        {
            "clips": rng.integers(0, 256, shape, dtype=np.uint8),
            "labels": np.repeat(rng.choice(num_classes, p, replace=False), k).astype(np.int32),
        }
        for _ in range(count)
    ]


def checkpointed_workdir(workdir, model="gltr", num_classes=5, seed=0, **overrides):
    """A training workdir as `python -m vreid_jax.main` leaves it (config.json and a checkpoint at
    step 1), holding the tiny config's randomly initialised model with perturbed batch-norm
    statistics (so that eval-mode normalisation is exercised): what `trained_model.load` reads, made in
    a second instead of a training run. Returns the config."""
    import json  # noqa: PLC0415
    import os  # noqa: PLC0415
    import types  # noqa: PLC0415

    import jax  # noqa: PLC0415

    from vreid_jax import checkpoint, models  # noqa: PLC0415
    from vreid_jax.training import loop, state

    config = tiny_config(model, **overrides)
    net = models.build_model(config.model, num_classes)
    init = jax.jit(lambda: state.init_variables(net, state.init_clips(config.input), seed))
    variables = jax.device_get(init())
    rng = np.random.default_rng(seed)

    def perturb(path, x):
        if path[-1].key == "var":
            return (x * rng.uniform(0.5, 1.5, x.shape)).astype(np.float32)
        return (x + rng.normal(0, 0.1, x.shape)).astype(np.float32)

    train_state = state.TrainState(
        step=np.int32(1),
        params=variables["params"],
        batch_stats=jax.tree_util.tree_map_with_path(perturb, variables["batch_stats"]),
        opt_state=(),
    )
    data = types.SimpleNamespace(name=config.data.name, num_classes=num_classes)
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "config.json"), "w") as f:
        json.dump(json.loads(config.to_json()), f)
    with checkpoint.Checkpointer(os.path.join(workdir, "checkpoints")) as ckpt:
        ckpt.save(1, train_state, loop.checkpoint_meta(config, data))
    return config


def run_command(module, *args, cwd=None):
    """Runs a command module's `main` in this process as its console script (or `python -m`)
    would, and returns what a subprocess run would: a `subprocess.CompletedProcess` with the exit
    status, stdout and stderr.

    The module's flags are defined, `args` parsed by absl (with the command's own flags parser,
    which its `cli_main` hands to `cli.launch`), then `main` runs inside `cli._one_line_errors`:
    everything `cli.launch` does but absl's `app.run`. A `data_prep` command (no `cli_main`:
    `_define_flags(); app.run(main)`) runs without that boundary, as from the command line.
    `sys.exit` and absl's usage errors give the exit status; any other exception propagates (a bug:
    the test shows its traceback). Afterwards the flags the command defined are deleted (absl's
    FLAGS is global), so the next command can define its own. Left out, as they would outlive the
    command in this process: `launch`'s log verbosity and `cli.start`'s malloc settings
    (`vreid_jax.host_memory`: a test worker would keep its peak memory until it exits).
    """
    import contextlib  # noqa: PLC0415
    import io  # noqa: PLC0415
    import subprocess  # noqa: PLC0415
    import unittest.mock  # noqa: PLC0415

    from absl import app, flags  # noqa: PLC0415

    from vreid_jax import cli, host_memory  # noqa: PLC0415

    argv = [module.__name__, *map(str, args)]
    launched = {}
    if hasattr(module, "cli_main"):

        def capture(main, define_flags, *, flags_parser=None, verbosity=None):
            del verbosity
            launched.update(
                main=cli._one_line_errors(main), define_flags=define_flags, parser=flags_parser
            )

        with unittest.mock.patch.object(cli, "launch", capture):
            module.cli_main()
    else:
        launched.update(main=module.main, define_flags=module._define_flags, parser=None)

    FLAGS = flags.FLAGS
    before, was_parsed = set(FLAGS), FLAGS.is_parsed()
    stdout, stderr = io.StringIO(), io.StringIO()
    try:
        with (
            contextlib.chdir(cwd or "."),
            unittest.mock.patch.object(host_memory, "keep_freed_memory", lambda *_: False),
            # ml_collections' config flag reads its `--config.key=value` overrides from sys.argv.
            unittest.mock.patch.object(sys, "argv", argv),
            contextlib.redirect_stdout(stdout),
            contextlib.redirect_stderr(stderr),
        ):
            try:
                launched["define_flags"]()
                remaining = (launched["parser"] or app.parse_flags_with_usage)(argv)
                code = launched["main"](remaining)
            except SystemExit as e:
                code = e.code
            except app.UsageError as e:
                print(f"\n{e}", file=sys.stderr)
                code = e.exitcode
            if isinstance(code, str):  # As the interpreter does with sys.exit("message").
                print(code, file=sys.stderr)
                code = 1
    finally:
        for name in set(FLAGS) - before:
            if name in FLAGS:
                delattr(FLAGS, name)
        if not was_parsed:
            FLAGS.unparse_flags()
    return subprocess.CompletedProcess(argv, code or 0, stdout.getvalue(), stderr.getvalue())


def build_once(tmp_path_factory, name, build):
    """The folder `name` made by `build(folder)` once per test run, shared by all xdist workers (the
    standard pattern: a folder beside the workers' own temporary folders and a file lock; the
    stdlib's `fcntl.flock`). The first worker to ask builds it; the others wait, then reuse it.
    Returns the folder (a `pathlib.Path`)."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # This run's folder, holding every worker's basetemp.
    folder, done = root / name, root / f"{name}.done"
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # Released when the file closes.
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)  # Left by a build that failed.
            folder.mkdir()
            build(folder)
            done.touch()
    return folder
