"""What every command does around its own work: the start-up before JAX and TensorFlow load, and
the one-line error a user gets for a problem they can fix.

Each command module defines `_define_flags()` and `main(argv)`, and ends with
`if __name__ == "__main__": cli_main()`, where `cli_main` (also its console script in
`pyproject.toml`) calls `launch`.
"""

from __future__ import annotations

import functools
import sys

from absl import app, flags, logging

from vreid_jax import errors, host_memory, logging_utils


def start(*, tensorflow: bool, keep_host_memory: str = "auto") -> None:
    """Prepares the process for a command's work. Runs before the command imports JAX.

    - Freed host memory stays in the process where JAX computes on the CPU (`host_memory`): glibc
      binds each thread to an arena when the thread starts, so this must come first.
    - With `tensorflow` (the commands that read data through tf.data, or write TensorFlow
      formats), TensorFlow is imported quietly and kept off the accelerators, which JAX owns.
    - Libraries' INFO chatter (orbax's per-file lines) is dropped from absl's log.
    """
    if host_memory.keep_freed_memory(keep_host_memory):
        logging.info("Freed host memory stays in the process (keep_host_memory=%s).", keep_host_memory)
    if tensorflow:
        logging_utils.quiet_tensorflow()
    logging_utils.quiet_libraries()


def _one_line_errors(main):
    """A problem the user can fix (`errors.USER_ERRORS`) ends the command with `error: <message>`
    and a non-zero status, without a traceback; any other exception is a bug and keeps its own."""

    @functools.wraps(main)
    def wrapped(argv):
        try:
            return main(argv)
        except errors.USER_ERRORS as e:
            sys.exit(f"error: {e}")

    return wrapped


def launch(main, define_flags, *, flags_parser=None, verbosity: int | None = None) -> None:
    """Runs a command: defines its flags (only now, so that importing any command module claims no
    global flag name), parses them and calls `main(argv)` inside the one-line error boundary."""
    define_flags()
    if verbosity is not None:
        logging.set_verbosity(verbosity)
    kwargs = {"flags_parser": flags_parser} if flags_parser else {}
    app.run(_one_line_errors(main), **kwargs)


def config_flags_parser(usage: str):
    """The flags parser of a command with a `--config` file flag: config errors (an unknown key, a
    bad value, a missing or broken file) become one clear line, with `usage` for flag errors."""

    def parse(argv):
        try:
            remaining = flags.FLAGS(argv)
            flags.FLAGS.config.mode  # noqa: B018  (the config file loads lazily: load it here)
            return remaining
        except flags.Error as e:
            sys.exit(f"error: {e}\nUsage: {usage}")
        except errors.USER_ERRORS as e:  # The config file refused its `:arg` (an unknown one).
            sys.exit(f"error: {e}")
        except (OSError, SyntaxError, ImportError, NameError) as e:  # A missing or broken file.
            sys.exit(f"error: cannot load the --config file: {type(e).__name__}: {e}")
        except AttributeError as e:
            # ml_collections raises this for `--config.no_such_key=...` (a locked config has no
            # new keys).
            overrides = [a for a in argv[1:] if a.startswith("--config.")]
            sys.exit(
                f"error: unknown config key {e}; overrides given: {overrides}. "
                "Every key is listed, with a comment, in configs/default.py."
            )

    return parse


def no_arguments(argv) -> None:
    """Refuses positional arguments a command does not take (a flag missing its `--`, usually)."""
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
