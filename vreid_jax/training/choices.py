"""The values `config.optim.name` and `config.schedule.name` accept, read by `config_lib.validate`
before any work; `optim` implements each and takes the names as validated. Cheap to import (no jax,
no optax)."""

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("exponential", "multistep", "constant")
