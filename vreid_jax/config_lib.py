"""Helpers shared by the files under `configs/`, and `validate`: the one check of a config.

Kept free of heavy imports (no jax, no tensorflow, no numpy) so that config files stay declarative
and cheap to load: `configs/*.py` may import this module and `ml_collections` only. The modules it
asks for allowed values (`*/choices.py`, `models/registry.py`, `data_prep/names.py`,
`host_memory.py`) are as cheap.
"""

from __future__ import annotations

import ml_collections

from data_prep import names
from vreid_jax import host_memory
from vreid_jax.data import choices as data_choices
from vreid_jax.errors import UserError
from vreid_jax.evaluation import choices as eval_choices
from vreid_jax.models import registry
from vreid_jax.training import choices as training_choices

# What `config.mode` can ask for (see configs/default.py).
MODES = ("train_and_eval", "train", "eval", "preflight")
# Every config key whose value is one of a few names, with the constant of the module that
# implements them (config.model's are `registry.check_config`'s).
_CHOICE_KEYS = (
    ("mode", MODES),
    ("data.name", names.NAMES),
    ("input.resize", data_choices.RESIZE_METHODS),
    ("input.epoch", data_choices.EPOCHS),
    ("input.train_sampler", data_choices.TEMPORAL_SAMPLERS),
    ("loss.triplet_distance", eval_choices.DISTANCES),
    ("optim.name", training_choices.OPTIMIZERS),
    ("schedule.name", training_choices.SCHEDULES),
    ("eval.aggregate", eval_choices.AGGREGATES),
    ("eval.distance", eval_choices.DISTANCES),
    ("eval.gallery", data_choices.GALLERIES),
    ("eval.ap_mode", eval_choices.AP_MODES),
    ("keep_host_memory", host_memory.CHOICES),
)
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
    "eval.max_rank",
    "eval.ranked_top_k",
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


def validate(config: ml_collections.ConfigDict) -> None:
    """The one check of a config's values, before any data is read or device used.

    Every choice key against the allowed values of the module that implements it, and every rule
    that needs neither data nor devices; the code after it takes the config as checked. What needs
    the data (the frame size against the stored frames, P against the identities) or the devices
    (the batch against the device and process counts, `parallel.check_train_batch`) is checked
    where that is known.

    Raises:
      UserError: naming the first key at fault, its value and what it may be.
    """
    for key, allowed in _CHOICE_KEYS:
        value = _get(config, key)
        if (value.lower() if key == "keep_host_memory" else value) not in allowed:
            raise UserError(f"config.{key}={value!r}; expected one of {allowed}.")
    registry.check_config(config.model)
    for key in _POSITIVE_INT_KEYS:
        value = _get(config, key)
        if value <= 0:
            raise UserError(f"config.{key} must be positive, got {value}.")
    if not config.preflight.input_seconds > 0:
        raise UserError(
            f"config.preflight.input_seconds must be positive, got {config.preflight.input_seconds}."
        )
    _check_splits(config)
    if not config.eval.checkpoint:
        raise UserError(
            "config.eval.checkpoint is empty; expected 'latest', 'best' or a checkpoint step folder."
        )
    _check_input(config.input, config.loss)
    if config.num_train_steps <= 0 and config.num_epochs <= 0:
        raise UserError("Set config.num_epochs > 0 or config.num_train_steps > 0.")
    _check_schedule(config.schedule)
    if registry.spec(config.model.name).training == registry.TFCLIP_TRAINING:
        _check_tfclip_training(config)


def _check_tfclip_training(config: ml_collections.ConfigDict) -> None:
    """TF-CLIP trains with its own Adam parameter groups, WarmupMultiStepLR (warm-up in whole
    epochs) and Euclidean triplets (`vreid_jax.training.kinds.TFClipTraining`)."""
    wanted = {
        "optim.name": "adam",
        "schedule.name": "multistep",
        "loss.triplet_distance": "euclidean",
    }
    for key, want in wanted.items():
        if _get(config, key) != want:
            raise UserError(
                f"config.{key}={_get(config, key)!r}: TF-CLIP trains with its own Adam parameter "
                f"groups, WarmupMultiStepLR and Euclidean triplets; set config.{key}={want!r}."
            )
    warmup = config.schedule.warmup_epochs
    if warmup != int(warmup):
        raise UserError(
            f"config.schedule.warmup_epochs={warmup}: TF-CLIP's warm-up counts whole epochs."
        )


def _get(config: ml_collections.ConfigDict, key: str):
    section, _, leaf = key.rpartition(".")
    return (config[section] if section else config)[leaf]


def _check_splits(config: ml_collections.ConfigDict) -> None:
    splits = tuple(config.eval.splits)
    if splits and config.data.name not in names.MULTI_SPLIT:
        raise UserError(
            f"config.eval.splits={splits!r}: only the 10-split datasets {names.MULTI_SPLIT} have "
            f"splits, not config.data.name={config.data.name!r}."
        )
    for key, values in (("data.split", (config.data.split,)), ("eval.splits", splits)):
        if any(v not in range(names.NUM_SPLITS) for v in values):
            raise UserError(
                f"config.{key}={_get(config, key)!r}: the published splits are 0 to "
                f"{names.NUM_SPLITS - 1}."
            )


def _check_input(input_config: ml_collections.ConfigDict, loss_config) -> None:
    cfg = input_config
    if cfg.num_instances < 2 and loss_config.triplet_weight > 0:
        raise UserError(
            f"config.input.num_instances={cfg.num_instances}: batch-hard triplet mining "
            "needs at least 2 clips per identity (or config.loss.triplet_weight=0)."
        )
    if cfg.num_instances < 1:
        raise UserError(f"config.input.num_instances={cfg.num_instances} must be >= 1.")
    if cfg.train_sampler == "restricted_window" and cfg.window < cfg.clip_len:
        raise UserError(
            f"config.input.window={cfg.window} is shorter than config.input.clip_len={cfg.clip_len}."
        )
    if cfg.pad < 0:
        raise UserError(f"config.input.pad={cfg.pad} must be >= 0.")
    if not 0.0 <= cfg.random_erasing <= 1.0:
        raise UserError(f"config.input.random_erasing={cfg.random_erasing} must be a probability.")


def _check_schedule(schedule: ml_collections.ConfigDict) -> None:
    if schedule.warmup_epochs < 0:
        raise UserError(f"config.schedule.warmup_epochs={schedule.warmup_epochs} is negative.")
    if schedule.name == "exponential" and schedule.decay_epochs <= 0:
        raise UserError(f"config.schedule.decay_epochs={schedule.decay_epochs} must be > 0.")
    milestones = list(schedule.milestones_epochs)
    if schedule.name == "multistep" and (
        milestones != sorted(milestones) or any(m <= schedule.warmup_epochs for m in milestones)
    ):
        raise UserError(
            f"config.schedule.milestones_epochs={tuple(milestones)} must be increasing and after "
            f"the warmup (config.schedule.warmup_epochs={schedule.warmup_epochs})."
        )
