"""The pixel contract: uint8 from the pipelines, ImageNet normalisation inside the compiled steps."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import tiny_config

from vreid_jax import models, parallel
from vreid_jax.data import pixels
from vreid_jax.evaluation import features
from vreid_jax.training import loop, optim
from vreid_jax.training import state as state_lib


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


def test_the_compiled_steps_normalise_uint8_pixels():
    """The eval forward on uint8 pixels equals the model on host-normalised floats, and the train
    step normalises too: it takes uint8 and refuses floats (checked by tracing, nothing runs)."""
    config = tiny_config("nl3d")
    mesh = parallel.make_mesh()
    module = models.build_model(config.model, 4)
    tx, _ = optim.create_optimizer(config, steps_per_epoch=10)
    state, _ = state_lib.create_train_state(
        module, tx, state_lib.init_clips(config.input), seed=0, mesh=mesh
    )
    p, k = config.input.num_ids_per_batch, config.input.num_instances
    shape = (p * k, config.input.clip_len, config.input.height, config.input.width, 3)
    raw = np.random.default_rng(0).integers(0, 256, shape).astype(np.uint8)
    host = np.asarray(pixels.normalize(raw))  # What the pipeline handed over before.
    variables = state_lib.variables_of(state)

    # Jitted: run op by op, the tiny NL3D takes seconds per call.
    on_device = jax.jit(features.clip_features, static_argnums=0)(
        module, variables, parallel.host_to_global({"x": raw}, mesh)["x"]
    )
    reference = jax.jit(lambda v, x: module.apply(v, x, train=False)[0])(variables, host)
    np.testing.assert_allclose(on_device, reference, rtol=1e-5, atol=1e-5)

    labels = np.repeat(np.arange(p), k).astype(np.int32)
    step = functools.partial(
        loop.loss_and_grads, model=module, loss_config=config.loss, seed=config.seed
    )
    jax.eval_shape(step, state, {"clips": raw, "labels": labels})
    with pytest.raises(TypeError, match="uint8"):
        jax.eval_shape(step, state, {"clips": host, "labels": labels})
