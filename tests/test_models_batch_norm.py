"""BatchNorm follows PyTorch in training mode: two-pass batch variance, unbiased running variance."""

import jax
import numpy as np
import pytest
from flax import linen as nn

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
