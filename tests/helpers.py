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


def checkpointed_workdir(workdir, model="gltr", num_classes=5, seed=0, **overrides):
    """A training workdir as `python -m vreid_jax.main` leaves it (config.json and a checkpoint at
    step 1), holding the tiny config's randomly initialised model with perturbed batch-norm
    statistics (so that eval-mode normalisation is exercised): what `trained.load` reads, made in
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
