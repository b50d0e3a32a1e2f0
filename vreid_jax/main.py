r"""Command-line entry point.

  python -m vreid_jax.main --config configs/<file>.py[:arg] --workdir DIR [--config.key=value ...]

Only this file reads absl flags. It calls `vreid_jax.run.run(config, workdir)`, the same function a
notebook calls, which validates the config and records it in `workdir/config.json`.
"""

from absl import flags
from ml_collections import config_flags

from vreid_jax import cli, config_lib

FLAGS = flags.FLAGS
_USAGE = "python -m vreid_jax.main --config configs/<file>.py --workdir DIR"


def _define_flags() -> None:
    # Defined only when run as a script, so importing this module claims no global flag names.
    flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and results.")
    config_flags.DEFINE_config_file(
        "config",
        None,
        "Config file, e.g. configs/demo.py or configs/demo.py:model=gltr.",
        lock_config=True,
    )
    flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    cli.no_arguments(argv)
    # Checked before the heavy imports: a mistyped value fails in a second.
    config_lib.validate(FLAGS.config)
    cli.start(tensorflow=True, keep_host_memory=FLAGS.config.keep_host_memory)
    from vreid_jax import parallel, run  # noqa: PLC0415  (imports jax: after the start-up)

    parallel.initialize_distributed(FLAGS.config.mesh)
    run.run(FLAGS.config, FLAGS.workdir)


def cli_main():
    """The `vreid-train` console script."""
    cli.launch(main, _define_flags, flags_parser=cli.config_flags_parser(_USAGE))


if __name__ == "__main__":
    cli_main()
