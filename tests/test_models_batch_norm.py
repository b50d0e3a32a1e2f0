"""BatchNorm follows PyTorch in training mode: two-pass batch variance, unbiased running variance."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from vreid_jax.models import batch_norm
from vreid_jax.models.batch_norm import BatchNorm

torch = pytest.importorskip("torch")


def _torch_reference(x, scale, bias):
    bn = torch.nn.BatchNorm2d(x.shape[-1]).train()
    with torch.no_grad():
        bn.weight.copy_(torch.from_numpy(scale))
        bn.bias.copy_(torch.from_numpy(bias))
    y = bn(torch.from_numpy(x.transpose(0, 3, 1, 2))).detach().numpy().transpose(0, 2, 3, 1)
    return y, bn.running_mean.numpy(), bn.running_var.numpy()


@pytest.mark.parametrize("offset", [0.0, 1000.0])  # Activations far from zero next to their spread.
def test_train_mode_matches_torch(offset):
    rng = np.random.default_rng(0)
    x = (offset + rng.normal(size=(4, 5, 6, 8))).astype(np.float32)
    scale, bias = (
        np.linspace(0.5, 1.5, 8, dtype=np.float32),
        np.linspace(-1, 1, 8, dtype=np.float32),
    )
    expected, running_mean, running_var = _torch_reference(x, scale, bias)

    module = BatchNorm(use_running_average=False)
    batch_stats = module.init(jax.random.key(0), x)["batch_stats"]
    variables = {"params": {"scale": scale, "bias": bias}, "batch_stats": batch_stats}
    y, updates = module.apply(variables, x, mutable=["batch_stats"])
    np.testing.assert_allclose(y, expected, atol=1e-3 if offset else 1e-5)
    np.testing.assert_allclose(updates["batch_stats"]["mean"], running_mean, rtol=1e-5, atol=1e-7)
    # PyTorch's running variance takes the unbiased batch variance (n = 4 * 5 * 6 = 120 values).
    np.testing.assert_allclose(updates["batch_stats"]["var"], running_var, rtol=1e-5)

    if offset:  # Flax's one-pass variance, E[x^2] - E[x]^2, loses the spread in float32.
        flax_bn = nn.BatchNorm(use_running_average=False, momentum=0.9, epsilon=1e-5)
        flax_y, _ = flax_bn.apply(variables, x, mutable=["batch_stats"])
        assert np.abs(flax_y - expected).max() > 1e-2


def test_masked_positions_count_nowhere():
    """GLTR's padded frames: statistics over the valid rows equal those of the valid rows alone."""
    x = np.random.default_rng(0).normal(size=(2, 6, 4)).astype(np.float32)
    mask = np.array([[1, 1, 1, 1, 0, 0], [1, 1, 1, 0, 0, 0]], bool)
    module = BatchNorm(use_running_average=False)
    variables = module.init(jax.random.key(0), x)
    y, stats = module.apply(variables, x, mask=mask[..., None], mutable=["batch_stats"])
    y_valid, stats_valid = module.apply(variables, x[mask], mutable=["batch_stats"])
    np.testing.assert_allclose(y[mask], y_valid, rtol=1e-5, atol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), stats, stats_valid)


@pytest.mark.parametrize("offset", [0.0, 1000.0])
def test_train_mode_gradients_match_torch(offset):
    """The written-out VJP against torch's autograd in float64: input, scale and bias gradients."""
    rng = np.random.default_rng(1)
    x = (offset + rng.normal(size=(4, 5, 6, 8))).astype(np.float32)
    probe = rng.normal(size=x.shape).astype(np.float32)  # dL/dy
    scale, bias = np.linspace(0.5, 1.5, 8, dtype=np.float32), np.zeros(8, np.float32)

    module = BatchNorm(use_running_average=False)
    batch_stats = module.init(jax.random.key(0), x)["batch_stats"]

    def loss(params, x):
        y, _ = module.apply(
            {"params": params, "batch_stats": batch_stats}, x, mutable=["batch_stats"]
        )
        return jnp.sum(jax.nn.relu(y) * probe)  # A ReLU after, as in every ResNet block.

    grads, x_grad = jax.grad(loss, argnums=(0, 1))({"scale": scale, "bias": bias}, x)

    bn = torch.nn.BatchNorm2d(8).double().train()
    with torch.no_grad():
        bn.weight.copy_(torch.from_numpy(scale))
    x_torch = torch.from_numpy(x.transpose(0, 3, 1, 2)).double().requires_grad_()
    y = torch.relu(bn(x_torch))
    (y * torch.from_numpy(probe.transpose(0, 3, 1, 2)).double()).sum().backward()
    expected = {
        "x": x_torch.grad.numpy().transpose(0, 2, 3, 1),
        "scale": bn.weight.grad.numpy(),
        "bias": bn.bias.grad.numpy(),
    }
    for name, got in (("x", x_grad), ("scale", grads["scale"]), ("bias", grads["bias"])):
        want = expected[name]
        np.testing.assert_allclose(got, want, atol=2e-4 * np.abs(want).max(), err_msg=name)


def test_masked_gradient_equals_autodiff_of_the_same_formula():
    """With a mask, and with the batch statistics themselves in the loss (their cotangents)."""
    rng = np.random.default_rng(2)
    x = (3.0 + rng.normal(size=(2, 6, 4))).astype(np.float32)
    weight = np.array([[1, 1, 1, 1, 0, 0], [1, 1, 1, 0, 0, 0]], np.float32)[..., None]
    scale, bias = np.linspace(0.5, 1.5, 4, dtype=np.float32), np.full(4, 0.3, np.float32)
    probes = [rng.normal(size=shape).astype(np.float32) for shape in (x.shape, (4,), (4,))]

    def loss(normalize, x, scale, bias):
        outputs = normalize(x, weight, scale, bias, 1e-5, jnp.float32)
        return sum(jnp.sum(out * probe) for out, probe in zip(outputs, probes, strict=True))

    written = jax.grad(functools.partial(loss, batch_norm._normalize), argnums=(0, 1, 2))
    autodiff = jax.grad(functools.partial(loss, batch_norm.batch_normalize), argnums=(0, 1, 2))
    for got, want in zip(written(x, scale, bias), autodiff(x, scale, bias), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
