"""Starting a model from ImageNet weights: the file overlaid on the model's own random init.

A model built with `config.model.pretrained` once started every parameter outside the ResNet trunk
at zero (heads, non-local blocks, GLTR's DTP and TSA): the features were identically zero and no
gradient reached those parameters. These tests pin the contract through `loop.build`, the path every
recipe takes.
"""

import functools
import types

import jax
import numpy as np
import pytest
from flax import traverse_util
from helpers import random_batches, tiny_config
from torchvision_reference import random_state_dict, torchvision_shapes

from vreid_jax import parallel
from vreid_jax.data import fake
from vreid_jax.models import pretrained, temporal
from vreid_jax.training import loop
from vreid_jax.training import state as state_lib

NUM_CLASSES = 6


def _data():
    """What `loop.build` reads of a dataset: the class count and tracklets per label."""
    index = fake.make_index([3] * NUM_CLASSES, 8, height=64, width=32)
    return types.SimpleNamespace(num_classes=NUM_CLASSES, label_counts=index.label_counts)


def _flat_variables(state):
    return traverse_util.flatten_dict(jax.device_get(state_lib.variables_of(state)))


# Two train-graph compiles per model: the full tier (whose recipe tests also train from converted
# weights and check that every leaf gets a gradient).
@pytest.mark.slow
@pytest.mark.parametrize("name", ["nl3d", "gltr"])
def test_build_overlays_the_file_on_the_random_init_and_every_leaf_learns(name, tmp_path):
    state_dict = random_state_dict(torchvision_shapes((1, 1, 1, 1), width=8))
    path = tmp_path / "imagenet.npz"
    np.savez(path, **state_dict)
    mesh = parallel.make_mesh()
    random_config = tiny_config(name)
    _, _, _, random_state, _ = loop.build(random_config, _data(), mesh)
    config = tiny_config(name, **{"model.pretrained": str(path)})
    model, tx, lr_fn, state, shardings = loop.build(config, _data(), mesh)

    # The trunk is the file; everything else is exactly the random init of the same seed.
    from_file = pretrained.convert(
        state_dict, state_lib.variables_of(state), include_fc=False, source="file"
    )
    random_flat, flat = _flat_variables(random_state), _flat_variables(state)
    assert flat.keys() == random_flat.keys()
    assert from_file and set(from_file) < set(flat)
    for key, value in flat.items():
        expected = from_file.get(key, random_flat[key])
        np.testing.assert_array_equal(value, expected, err_msg="/".join(key))
    assert all(s.is_fully_replicated for s in jax.tree.leaves(shardings))
    if name == "nl3d":  # Temporal taps at config.model.temporal_init: the I3D inflation.
        taps = flat[("params", "backbone", "layer2_0", "conv2_temporal", "kernel")]
        np.testing.assert_array_equal(taps, temporal.identity_taps(3, 16, "inflate"))

    # Within two steps every parameter leaf receives a non-zero gradient. (In step one the
    # non-local blocks' inner convs get none: their output BN starts at gamma 0, by design.)
    grads_fn = jax.jit(
        functools.partial(
            loop.loss_and_grads, model=model, loss_config=config.loss, seed=config.seed
        )
    )
    step_fn = loop.compile_train_step(model, tx, lr_fn, config, shardings, mesh)
    reached = None
    for batch in random_batches(config, 2, NUM_CLASSES):
        batch = parallel.host_to_global(batch, mesh)
        grads = grads_fn(state, batch)[3]
        nonzero = jax.tree.map(lambda g: bool(np.any(np.asarray(g) != 0)), grads)
        reached = nonzero if reached is None else jax.tree.map(bool.__or__, reached, nonzero)
        state, _ = step_fn(state, batch)
    dead = ["/".join(k) for k, v in traverse_util.flatten_dict(reached).items() if not v]
    assert not dead, f"no gradient reached {len(dead)} parameter leaves: {dead}"
