"""Batch normalisation with PyTorch's training numerics (`torch.nn.BatchNorm{1,2,3}d`).

Flax's `nn.BatchNorm` differs from PyTorch in training mode in two ways:
- It computes the batch variance in one pass, E[x^2] - E[x]^2. That cancels catastrophically when
  the activations are large next to their spread: 1.4e-2 relative difference in the features of a
  train-mode ResNet-50. Here it is two passes, E[(x - E[x])^2], as PyTorch does.
- It updates the running variance with the biased batch variance. PyTorch uses the unbiased one,
  n / (n - 1) times larger: negligible in the trunk, a few percent in a 1-D head BN at batch 32.

Normalisation uses the biased variance in both. The parameter and statistic names are flax's
(`scale`, `bias`; `mean`, `var`), so checkpoints and the ImageNet weight import are unchanged.
Eval mode uses the running statistics, as before.

The train-mode gradient is written out (`_normalize`'s VJP: two channel sums, then one elementwise
pass) rather than left to autodiff, whose backward through the two-pass statistics takes several
passes more over the activations (timings: `benchmarks/README.md`, "Batch-norm gradient").
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn


class BatchNorm(nn.Module):
    """Normalises over every axis but the last (channels).

    Attributes:
      use_running_average: eval mode (running statistics) if True, else batch statistics.
      momentum: flax's convention, `running = momentum * running + (1 - momentum) * batch`
        (PyTorch's momentum 0.1 is 0.9 here).
      epsilon: added to the variance (PyTorch's default 1e-5).
      dtype: the output dtype; statistics are always computed in float32.
      scale_init: the initialiser of the scale (gamma).
    """

    use_running_average: bool
    momentum: float = 0.9
    epsilon: float = 1e-5
    dtype: Any = jnp.float32
    scale_init: Callable = nn.initializers.ones

    @nn.compact
    def __call__(self, x, mask=None):
        """`mask` (broadcastable to `x`, True = counts), when given, restricts the batch
        statistics to the valid positions (padded frames of a tracklet count nowhere)."""
        features = x.shape[-1]
        scale = self.param("scale", self.scale_init, (features,), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (features,), jnp.float32)
        running_mean = self.variable("batch_stats", "mean", jnp.zeros, (features,), jnp.float32)
        running_var = self.variable("batch_stats", "var", jnp.ones, (features,), jnp.float32)
        if self.use_running_average:
            mean, var = running_mean.value, running_var.value
            return _apply(x, mean, var, scale, bias, self.epsilon, self.dtype)
        weight = jnp.ones(x.shape[:-1] + (1,), jnp.float32)
        if mask is not None:
            weight = jnp.broadcast_to(mask, weight.shape).astype(jnp.float32)
        y, mean, var = _normalize(x, weight, scale, bias, self.epsilon, self.dtype)
        if not self.is_initializing():
            count = jnp.sum(weight)
            unbiased = var * count / jnp.maximum(count - 1, 1)
            keep = self.momentum
            running_mean.value = keep * running_mean.value + (1 - keep) * mean
            running_var.value = keep * running_var.value + (1 - keep) * unbiased
        return y


def _apply(x, mean, var, scale, bias, epsilon, dtype):
    """`(x - mean) / sqrt(var + epsilon) * scale + bias` in `dtype` from float32 statistics."""
    multiplier = jax.lax.rsqrt(var + epsilon) * scale
    y = (x - mean.astype(dtype)) * multiplier.astype(dtype) + bias.astype(dtype)
    return y.astype(dtype)


def _batch_stats(x, weight):
    """The weighted mean and biased variance per channel, in float32 and in two passes."""
    axes = tuple(range(x.ndim - 1))
    count = jnp.sum(weight)
    centered_at = jnp.sum(x.astype(jnp.float32) * weight, axis=axes) / count
    # Two passes, as PyTorch: the spread is measured around the mean, not as E[x^2] - E[x]^2.
    var = jnp.sum(jnp.square(x.astype(jnp.float32) - centered_at) * weight, axis=axes) / count
    return centered_at, var


def batch_normalize(x, weight, scale, bias, epsilon, dtype):
    """Train-mode batch norm of `x` with the statistics of the positions where `weight` is 1:
    returns the output (in `dtype`) and the batch mean and biased variance.

    Differentiated by autodiff, this is the reference `_normalize`'s written-out gradient matches
    (tests/test_models_batch_norm.py, benchmarks/bn_train_step.py)."""
    mean, var = _batch_stats(x, weight)
    return _apply(x, mean, var, scale, bias, epsilon, dtype), mean, var


# The same function with the gradient written out below.
_normalize = jax.custom_vjp(batch_normalize, nondiff_argnums=(4, 5))


def _normalize_forward(x, weight, scale, bias, epsilon, dtype):
    y, mean, var = batch_normalize(x, weight, scale, bias, epsilon, dtype)
    return (y, mean, var), (x, weight, scale, mean, var)


def _normalize_backward(epsilon, dtype, residuals, cotangents):
    """With n = sum(weight), xc = x - mean and r = 1 / sqrt(var + epsilon), every output position
    depends on x directly (scale * r * dy) and through the statistics of the weighted positions:
    dx = scale * r * dy + weight * (dL/dmean + 2 * dL/dvar * xc) / n. (The variance does not move
    with the mean: the weighted xc sum to zero.)"""
    x, weight, scale, mean, var = residuals
    dy, dmean, dvar = cotangents
    axes = tuple(range(x.ndim - 1))
    count = jnp.sum(weight)
    rstd = jax.lax.rsqrt(var + epsilon)
    dy = dy.astype(jnp.float32)
    centered = x.astype(jnp.float32) - mean
    dbias = jnp.sum(dy, axis=axes)
    dy_centered = jnp.sum(dy * centered, axis=axes)
    loss_by_mean = dmean - scale * rstd * dbias
    loss_by_var = dvar - 0.5 * rstd**3 * scale * dy_centered
    dx = scale * rstd * dy + weight * (loss_by_mean + 2 * loss_by_var * centered) / count
    return dx.astype(x.dtype), jnp.zeros_like(weight), dy_centered * rstd, dbias


_normalize.defvjp(_normalize_forward, _normalize_backward)
