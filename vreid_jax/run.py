"""Dispatch on `config.mode`: what the command line and notebooks run."""

from __future__ import annotations


def run(config, workdir: str):
    """Runs `config.mode` ('train_and_eval', 'train' or 'eval') in `workdir`; returns its result."""
    if config.mode in ("train_and_eval", "train"):
        raise NotImplementedError(
            f"config.mode={config.mode!r}: training is not implemented yet in this version of "
            "vreid_jax (see the training issue)."
        )
    if config.mode == "eval":
        raise NotImplementedError(
            "config.mode='eval': evaluation is not implemented yet in this version of vreid_jax."
        )
    raise ValueError(f"Unknown config.mode={config.mode!r}.")
