"""GLTR: DTP keeps the length, 512-d output, padded+masked == unpadded, separable halves."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs.default import get_config
from vreid_jax import models
from vreid_jax.models.gltr import DilatedTemporalPyramid


@pytest.mark.parametrize("dilations", [(1, 2, 3), (1, 2, 4)])
@pytest.mark.parametrize("length", [1, 5, 16])
def test_dtp_keeps_length_and_gives_512(dilations, length):
    dtp = DilatedTemporalPyramid(dilations)
    x = jnp.ones((2, length, 128))
    out = jax.eval_shape(lambda x: dtp.init_with_output(jax.random.key(0), x)[0], x)
    assert out.shape == (2, length, 512)


@pytest.fixture(scope="module")
def tiny_gltr():
    config = get_config().model
    config.update(name="gltr", stage_sizes=(1, 1, 1, 1), width=8)
    module = models.build_model(config, num_classes=7)
    clips = np.random.default_rng(0).normal(size=(2, 3, 64, 32, 3)).astype(np.float32)
    keys = {"params": jax.random.key(0), "dropout": jax.random.key(1)}
    variables = jax.jit(lambda c: module.init(keys, c, train=False))(clips)
    # Activate the TSA (its BN starts at zero) and make the DTP weights visible next to identity.
    params = dict(variables["params"])
    params["tsa"] = dict(params["tsa"])
    params["tsa"]["out_bn"] = {"scale": jnp.ones(512), "bias": jnp.full(512, 0.1)}
    params["dtp"] = jax.tree.map(lambda k: k * 300.0, params["dtp"])
    return module, {"params": params, "batch_stats": variables["batch_stats"]}, clips


# Every forward is jitted: op by op, the tiny GLTR takes many seconds per call.
@functools.partial(jax.jit, static_argnums=0)
def _head(module, variables, features, mask):
    return module.apply(variables, features, mask, train=False, method="temporal_head")


@functools.partial(jax.jit, static_argnums=(0, 2))
def _apply(module, variables, method, x, **kwargs):
    return module.apply(variables, x, train=False, method=method, **kwargs)


def test_padded_and_masked_equals_unpadded(tiny_gltr):
    module, variables, _ = tiny_gltr
    rng = np.random.default_rng(1)
    lengths = (5, 2)
    padded = rng.normal(size=(2, 8, 128)).astype(np.float32) * 10  # garbage beyond each length
    mask = np.arange(8)[None] < np.array(lengths)[:, None]
    got = _head(module, variables, padded, mask)
    assert got.shape == (2, 512) and got.dtype == jnp.float32
    for i, n in enumerate(lengths):
        alone = _head(module, variables, padded[i : i + 1, :n], np.ones((1, n), bool))
        np.testing.assert_allclose(got[i], alone[0], rtol=1e-4, atol=1e-4)
    # Ignoring the mask would change the answer: the test can fail.
    unmasked = _head(module, variables, padded, np.ones((2, 8), bool))
    assert not np.allclose(unmasked[0], got[0], atol=1e-3)


def test_halves_compose_to_the_full_model(tiny_gltr):
    module, variables, clips = tiny_gltr
    features, logits = _apply(module, variables, "__call__", clips)
    assert features.shape == (2, 512) and logits.shape == (2, 7)
    frames = clips.reshape(6, 64, 32, 3)
    frame_features = _apply(module, variables, "encode_frames", frames)
    assert frame_features.shape == (6, 128)
    mask = np.ones((2, 3), bool)
    head = _head(module, variables, frame_features.reshape(2, 3, 128), mask)
    np.testing.assert_allclose(head, features, rtol=1e-5, atol=1e-5)
    masked_call, _ = _apply(module, variables, "__call__", clips, mask=mask)
    np.testing.assert_allclose(masked_call, features, rtol=1e-5, atol=1e-5)
