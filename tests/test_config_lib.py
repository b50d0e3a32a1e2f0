"""Config helpers: the `:arg` suffix, epochs to steps, and the checks that need no data."""

import pytest
from helpers import tiny_config

from vreid_jax import config_lib, errors


def test_parse_arg_types_and_errors():
    args = config_lib.parse_arg("model=gltr,split=3,quick", model="nl3d", split=0, quick=False)
    assert (args.model, args.split, args.quick) == ("gltr", 3, True)
    with pytest.raises(ValueError, match="Unknown config argument 'modle'"):
        config_lib.parse_arg("modle=gltr", model="nl3d")
    with pytest.raises(ValueError, match="not a int"):
        config_lib.parse_arg("split=x", split=0)


def test_epochs_to_steps():
    assert config_lib.epochs_to_steps(1.5, 20) == 30


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("mode", "fly", "config.mode='fly'"),
        ("log_every_steps", 0, "log_every_steps must be positive"),
        ("input.num_instances", 1, "at least 2 clips per identity"),
    ],
)
def test_validate_names_the_key(key, value, message):
    config = tiny_config("nl3d", **{key: value})
    with pytest.raises(errors.UserError, match=message):
        config_lib.validate(config)
