"""Dataset preparation: raw video re-ID datasets -> TFRecord shards, and synthetic datasets.

Modules: one parser per dataset (`mars`, `dukev`, `ilidsvid`, `prid2011`, `lsvid`) producing the
canonical tracklet index (`index`); TFDS builders (`builders`); the `build` and `stats` CLIs; the
`reader` of built datasets; the synthetic generator (`synthetic`, `render`, `synthetic_layouts`).
Importing this package is cheap: it never imports jax or the trainer, and TensorFlow only where
shards are written or read.
"""

import os


def quiet_tensorflow_logs() -> None:
    """Keeps TensorFlow's start-up log quiet unless the user asked otherwise.

    TensorFlow reads these variables when it is first imported, so every command calls this before
    anything imports TensorFlow: the `data_prep` commands first thing in `main`, `vreid_jax`'s in
    `vreid_jax.cli.start`. The one place that sets them.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

