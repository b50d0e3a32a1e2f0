"""The pixel contract: uint8 from the pipelines, ImageNet normalisation inside the compiled steps."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import tiny_config

from vreid_jax import features, losses, models, optim, parallel, train
from vreid_jax import state as state_lib
from vreid_jax.data import pixels


def test_normalize_is_torchvision_convention():
    x = jnp.asarray([[[0, 128, 255]]], jnp.uint8)
    expected = (np.array([0, 128, 255]) / 255.0 - pixels.IMAGENET_MEAN) / pixels.IMAGENET_STD
    out = pixels.normalize(x)
    assert out.dtype == jnp.float32
    np.testing.assert_allclose(out[0, 0], expected, rtol=1e-5)


def test_normalize_accepts_only_uint8():
    """Normalised floats are refused, so that normalising twice cannot happen silently."""
    for dtype in (jnp.float32, jnp.int32):
        with pytest.raises(TypeError, match="uint8"):
            pixels.normalize(jnp.ones((2, 3), dtype))


def test_mean_pixel_normalises_to_about_zero():
    mean = pixels.normalize(jnp.asarray(pixels.MEAN_PIXEL, jnp.uint8))
    assert np.abs(np.asarray(mean)).max() < 0.01


def test_steps_on_uint8_equal_the_model_on_host_normalised_floats():
    """The train step and the eval forward normalise uint8 pixels exactly as the host used to."""
    config = tiny_config("nl3d")
    mesh = parallel.make_mesh()
    module = models.build_model(config.model, 4)
    tx, lr_fn = optim.create_optimizer(config, steps_per_epoch=10)
    state, shardings = state_lib.create_train_state(
        module, tx, state_lib.init_clips(config.input), seed=0, mesh=mesh
    )
    p, k = config.input.num_ids_per_batch, config.input.num_instances
    shape = (p * k, config.input.clip_len, config.input.height, config.input.width, 3)
    raw = np.random.default_rng(0).integers(0, 256, shape).astype(np.uint8)
    host = np.asarray(pixels.normalize(raw))  # What the pipeline handed over before.
    labels = np.repeat(np.arange(p), k).astype(np.int32)
    variables = state_lib.variables_of(state)

    on_device = features.clip_features(
        module, variables, parallel.host_to_global({"x": raw}, mesh)["x"]
    )
    np.testing.assert_allclose(
        on_device, module.apply(variables, host, train=False)[0], rtol=1e-5, atol=1e-5
    )

    (feats, logits), _ = module.apply(
        variables,
        host,
        train=True,
        rngs={"dropout": jax.random.fold_in(jax.random.key(config.seed), 0)},
        mutable=["batch_stats"],
    )
    loss, _ = losses.total_loss(feats, logits, labels, config.loss)
    step_fn = train.compile_train_step(module, tx, lr_fn, config, shardings, mesh)
    # The step donates the state: it runs after everything that reads `variables`.
    _, step_metrics = step_fn(
        state, parallel.host_to_global({"clips": raw, "labels": labels}, mesh)
    )
    np.testing.assert_allclose(float(step_metrics["loss"]), float(loss), rtol=1e-5)
