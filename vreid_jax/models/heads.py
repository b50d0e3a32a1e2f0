"""Training heads after the pooled feature; both run in float32 whatever the compute dtype."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import linen as nn

from vreid_jax.models import layers

# Classifier weights ~ N(0, 0.001), biases 0: layumi's ClassBlock and GLTR's official code.
_classifier_init = nn.initializers.normal(stddev=0.001)


def _near_one(stddev: float):
    """BN gamma ~ N(1, stddev) (layumi's `weights_init_kaiming` for BatchNorm1d)."""

    def init(key, shape, dtype=jnp.float32):
        return 1.0 + stddev * jax.random.normal(key, shape, dtype)

    return init


def _head_bn(train: bool, name: str, scale_init=nn.initializers.ones) -> layers.BatchNorm:
    return layers.batch_norm(train, jnp.float32, name, scale_init=scale_init)


class BottleneckHead(nn.Module):
    """NL3D: Dense(bottleneck_dim) -> BN -> LeakyReLU(0.1) -> Dropout -> classifier.

    Returns `(feature, logits)`. The retrieval feature is the BN output, before the activation and
    the dropout: it is the same function of the input in train and eval mode (up to BN statistics),
    so the triplet loss and the evaluation see one feature.
    """

    num_classes: int
    bottleneck_dim: int = 512
    dropout: float = 0.5

    @nn.compact
    def __call__(self, x, train: bool):
        x = nn.Dense(
            self.bottleneck_dim,
            kernel_init=layers.kaiming_fan_out,
            bias_init=nn.initializers.zeros,
            name="bottleneck",
        )(x.astype(jnp.float32))
        feature = _head_bn(train, "bottleneck_bn", scale_init=_near_one(0.02))(x)
        y = nn.leaky_relu(feature, negative_slope=0.1)
        y = nn.Dropout(self.dropout, deterministic=not train)(y)
        logits = nn.Dense(
            self.num_classes,
            kernel_init=_classifier_init,
            bias_init=nn.initializers.zeros,
            name="classifier",
        )(y)
        return feature, logits


class ClassifierHead(nn.Module):
    """GLTR's training-only head: BN -> ReLU -> Dropout -> classifier. Returns logits."""

    num_classes: int
    dropout: float = 0.5

    @nn.compact
    def __call__(self, x, train: bool):
        y = nn.relu(_head_bn(train, "bn")(x.astype(jnp.float32)))
        y = nn.Dropout(self.dropout, deterministic=not train)(y)
        return nn.Dense(
            self.num_classes,
            kernel_init=_classifier_init,
            bias_init=nn.initializers.zeros,
            name="classifier",
        )(y)
