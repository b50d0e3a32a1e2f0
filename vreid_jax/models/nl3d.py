"""NL3D (Liao et al., ACCV 2018): (2+1)D inflated ResNet-50 with non-local blocks, bottleneck head."""

from __future__ import annotations

import jax.numpy as jnp
from flax import linen as nn

from vreid_jax.models import heads, resnet


class NL3D(nn.Module):
    """Clip `[B, T, H, W, 3]` -> (retrieval feature `[B, bottleneck_dim]`, logits), both float32.

    Attributes:
      backbone: a `resnet.ResNet` with temporal and non-local blocks (see `registry.build_model`).
      num_classes: training identities.
      bottleneck_dim: size of the retrieval feature.
      dropout: dropout rate before the classifier.
    """

    backbone: resnet.ResNet
    num_classes: int
    bottleneck_dim: int = 512
    dropout: float = 0.5

    @nn.compact
    def __call__(self, clips, train: bool, mask=None):
        # Every frame of an NL3D clip is real (short tracklets are loop-padded), so `mask` is unused;
        # it is accepted so both models share one call signature.
        del mask
        x = self.backbone(clips, train)
        pooled = jnp.mean(x.astype(jnp.float32), axis=(1, 2, 3))
        return heads.BottleneckHead(
            self.num_classes, self.bottleneck_dim, self.dropout, name="head"
        )(pooled, train)
