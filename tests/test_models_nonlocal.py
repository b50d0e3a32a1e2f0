"""Non-local block: identity at init, not after one gradient step; key masks; sub-sampling."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vreid_jax.models.non_local import NonLocalBlock

X = np.random.default_rng(0).normal(size=(2, 2, 4, 4, 8)).astype(np.float32)  # [B, T, H, W, C]


def _init(block, x):
    return block.init(jax.random.key(0), x, train=False)


@pytest.mark.parametrize("train", [False, True])
def test_identity_at_init(train):
    block = NonLocalBlock(pool_window=(1, 2, 2))
    variables = _init(block, X)
    out = block.apply(variables, X, train=train, mutable=["batch_stats"] if train else False)
    out = out[0] if train else out
    np.testing.assert_array_equal(out, X)
    assert variables["params"]["theta"]["kernel"].shape == (8, 4)  # inner = C / 2


def test_not_identity_after_one_gradient_step():
    block = NonLocalBlock(pool_window=(1, 2, 2))
    variables = _init(block, X)
    target = np.random.default_rng(1).normal(size=X.shape).astype(np.float32)

    def loss(params):
        out, _ = block.apply(
            {"params": params, "batch_stats": variables["batch_stats"]},
            X,
            train=True,
            mutable=["batch_stats"],
        )
        return jnp.mean((out - target) ** 2)

    grads = jax.grad(loss)(variables["params"])
    assert jnp.any(grads["out_bn"]["scale"] != 0) and jnp.any(grads["out_bn"]["bias"] != 0)
    params = jax.tree.map(lambda p, g: p - 0.5 * g, variables["params"], grads)
    out = block.apply({"params": params, "batch_stats": variables["batch_stats"]}, X, train=False)
    assert not np.allclose(out, X)


def _non_identity(variables):
    """Variables with an active output BN, so the attention shows in the output."""
    params = dict(variables["params"])
    params["out_bn"] = {
        "scale": jnp.ones_like(params["out_bn"]["scale"]),
        "bias": params["out_bn"]["bias"],
    }
    return {"params": params, "batch_stats": variables["batch_stats"]}


def test_key_mask_hides_padded_positions():
    block = NonLocalBlock()
    x = np.random.default_rng(2).normal(size=(1, 6, 8)).astype(np.float32)
    mask = np.array([[True] * 4 + [False] * 2])
    variables = _non_identity(_init(block, x))
    out = block.apply(variables, x, train=False, mask=mask)
    garbage = x.copy()
    garbage[:, 4:] = 100.0
    out_garbage = block.apply(variables, garbage, train=False, mask=mask)
    np.testing.assert_allclose(out[:, :4], out_garbage[:, :4], rtol=1e-5, atol=1e-5)
    short = block.apply(variables, x[:, :4], train=False)
    np.testing.assert_allclose(out[:, :4], short, rtol=1e-5, atol=1e-5)
    unmasked = block.apply(variables, garbage, train=False)
    assert not np.allclose(unmasked[:, :4], out[:, :4])


def test_scale_flag_changes_the_affinity():
    variables = _non_identity(_init(NonLocalBlock(pool_window=(1, 2, 2)), X))
    plain = NonLocalBlock(pool_window=(1, 2, 2)).apply(variables, X, train=False)
    scaled = NonLocalBlock(pool_window=(1, 2, 2), scale=True).apply(variables, X, train=False)
    assert not np.allclose(plain, scaled)


def test_mask_with_pooling_is_refused():
    block = NonLocalBlock(pool_window=(1, 2, 2))
    variables = _init(block, X)
    with pytest.raises(ValueError, match="pool_window"):
        block.apply(variables, X, train=False, mask=np.ones(X.shape[:-1], bool))
