"""Helpers shared by the tests (conftest.py holds the fixtures and the harness set-up)."""

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
