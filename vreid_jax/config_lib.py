"""Helpers shared by the files under `configs/`.

Kept free of heavy imports (no jax, no tensorflow) so that config files stay declarative and cheap to
load: `configs/*.py` may import this module and `ml_collections` only.
"""

from __future__ import annotations

import ml_collections

from data_prep import names
from vreid_jax.errors import UserError

# What `config.mode` can ask for (see configs/default.py).
MODES = ("train_and_eval", "train", "eval", "preflight")
# Config keys whose value must be a positive multiple of something or a sentinel; checked before any
# compile so that a bad value fails in milliseconds, not after minutes of tracing.
_POSITIVE_INT_KEYS = (
    "log_every_steps",
    "eval_every_steps",
    "checkpoint_every_steps",
    "keep_checkpoints",
    "input.num_ids_per_batch",
    "input.height",
    "input.width",
    "input.clip_len",
    "eval.batch_size",
    "eval.frame_batch_size",
    "preflight.timed_steps",
)


def parse_arg(arg: str | None, **defaults) -> ml_collections.ConfigDict:
    """Parses the `:arg` suffix of `--config configs/x.py:arg` into typed values.

    `arg` is a comma-separated list of `key=value` items (or bare `key`, meaning True). Each key must be
    one of `defaults`; a value is converted to the type of its default, so `split=3` is an int.

    Example: `parse_arg("model=gltr,split=3", model="nl3d", split=0)`.

    Raises:
      ValueError: for an unknown key or a value that does not convert.
    """
    result = ml_collections.ConfigDict(dict(defaults))
    for item in filter(None, (arg or "").split(",")):
        key, _, value = item.partition("=")
        key = key.strip()
        if key not in defaults:
            raise ValueError(
                f"Unknown config argument {key!r} in {arg!r}; known arguments: {sorted(defaults)}."
            )
        default = defaults[key]
        if not _:  # A bare `key` switches a boolean on.
            value = "true"
        result[key] = _convert(key, value.strip(), default)
    return result


def _convert(key, value: str, default):
    if isinstance(default, bool):
        if value.lower() in ("1", "true", "yes"):
            return True
        if value.lower() in ("0", "false", "no"):
            return False
        raise ValueError(f"Config argument {key}={value!r} is not a boolean.")
    try:
        return type(default)(value) if default is not None else value
    except ValueError as e:
        raise ValueError(
            f"Config argument {key}={value!r} is not a {type(default).__name__}."
        ) from e


def epochs_to_steps(epochs: float, steps_in_epoch: int) -> int:
    """Converts a duration in epochs to optimiser steps. The one place where epochs become steps."""
    return int(round(epochs * steps_in_epoch))


def total_train_steps(config: ml_collections.ConfigDict, steps_in_epoch: int) -> int:
    """`config.num_train_steps` when positive, else `config.num_epochs` converted to steps."""
    if config.num_train_steps > 0:
        return int(config.num_train_steps)
    return epochs_to_steps(config.num_epochs, steps_in_epoch)


def validate(config: ml_collections.ConfigDict) -> None:
    """Checks the values that need no data or devices; raises UserError naming the key."""
    if config.mode not in MODES:
        raise UserError(f"config.mode={config.mode!r}; expected one of {MODES}.")
    for key in _POSITIVE_INT_KEYS:
        section, _, leaf = key.rpartition(".")
        value = (config[section] if section else config)[leaf]
        if value <= 0:
            raise UserError(f"config.{key} must be positive, got {value}.")
    if not config.preflight.input_seconds > 0:
        raise UserError(
            f"config.preflight.input_seconds must be positive, got {config.preflight.input_seconds}."
        )
    if config.data.name not in names.NAMES:
        raise UserError(f"config.data.name={config.data.name!r}; expected one of {names.NAMES}.")
    if not config.eval.checkpoint:
        raise UserError(
            "config.eval.checkpoint is empty; expected 'latest', 'best' or a checkpoint step folder."
        )
    if config.num_train_steps <= 0 and config.num_epochs <= 0:
        raise UserError("Set config.num_epochs > 0 or config.num_train_steps > 0.")
    if config.input.num_instances < 2 and config.loss.triplet_weight > 0:
        raise UserError(
            f"config.input.num_instances={config.input.num_instances}: batch-hard triplet mining "
            "needs at least 2 clips per identity (or config.loss.triplet_weight=0)."
        )
    if config.input.num_instances < 1:
        raise UserError(f"config.input.num_instances={config.input.num_instances} must be >= 1.")
