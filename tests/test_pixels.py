"""The pixel contract: uint8 from the pipelines, ImageNet normalisation inside the compiled steps."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tiny_config

from vreid_jax import evaluate, models, optim, parallel, train
from vreid_jax import state as state_lib
from vreid_jax.data import pixels


def test_normalize_is_torchvision_convention():
    x = jnp.asarray([[[0, 128, 255]]], jnp.uint8)
    expected = (np.array([0, 128, 255]) / 255.0 - pixels.IMAGENET_MEAN) / pixels.IMAGENET_STD
    out = pixels.normalize(x)
    assert out.dtype == jnp.float32
    np.testing.assert_allclose(out[0, 0], expected, rtol=1e-5)


def test_normalize_passes_floats_and_rejects_other_integers():
    already = jnp.ones((2, 3), jnp.float32)
    assert pixels.normalize(already) is already
    with pytest.raises(TypeError, match="uint8"):
        pixels.normalize(jnp.ones((2, 3), jnp.int32))


def test_mean_pixel_normalises_to_about_zero():
    mean = pixels.normalize(jnp.asarray(pixels.MEAN_PIXEL, jnp.uint8))
    assert np.abs(np.asarray(mean)).max() < 0.01


def test_steps_on_uint8_equal_steps_on_host_normalised_floats():
    """The train step and the eval forward normalise uint8 pixels exactly as the host used to."""
    config = tiny_config("nl3d")
    mesh = parallel.make_mesh()
    module = models.build_model(config.model, 4)
    tx, lr_fn = optim.create_optimizer(config, steps_per_epoch=10)
    state, shardings = state_lib.create_train_state(
        module, tx, train.sample_clips(config), seed=0, mesh=mesh
    )
    step_fn = train.compile_train_step(module, tx, lr_fn, config, shardings, mesh)
    p, k = config.input.num_ids_per_batch, config.input.num_instances
    shape = (p * k, config.input.clip_len, config.input.height, config.input.width, 3)
    raw = np.random.default_rng(0).integers(0, 256, shape).astype(np.uint8)
    host = np.asarray(pixels.normalize(raw))  # What the pipeline handed over before.
    labels = np.repeat(np.arange(p), k).astype(np.int32)
    variables = state_lib.variables_of(state)

    extractor = evaluate.FeatureExtractor(module, config, mesh)
    feats = [
        extractor._clips(variables, parallel.host_to_global({"x": x}, mesh)["x"])
        for x in (raw, host)
    ]
    np.testing.assert_allclose(*feats, rtol=1e-5, atol=1e-5)

    losses = []
    for clips in (raw, host):
        copy = jax.tree.map(jnp.copy, state)  # The step donates its state.
        batch = parallel.host_to_global({"clips": clips, "labels": labels}, mesh)
        _, metrics = step_fn(copy, batch)
        losses.append(float(metrics["loss"]))
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-6)
