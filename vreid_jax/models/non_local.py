"""Non-local block, embedded Gaussian form (Wang et al. 2018), over any number of position axes.

NL3D inserts it into the 3D ResNet (positions T x H x W, phi and g max-pooled 1 x 2 x 2); GLTR's
temporal self-attention (TSA) is the same block over time only, with a key mask for padded frames.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import linen as nn

from vreid_jax.models import layers


class NonLocalBlock(nn.Module):
    """z = x + BN(W y), y = softmax(theta(x) phi(x)^T) g(x); an identity map at init.

    The output BN starts with gamma = beta = 0, so inserting the block leaves a pretrained network
    unchanged until training moves them.

    Attributes:
      inner_dim: width of theta, phi and g; None = half the input channels (both papers).
      pool_window: max-pool window (and stride) over the position axes for phi and g, e.g. (1, 2, 2)
        for a `[B, T, H, W, C]` input; None = no sub-sampling (GLTR's TSA).
      scale: multiply the affinity by 1/sqrt(inner_dim) (Wang et al.'s Caffe2 option; AP3D and
        GLTR leave it off).
      dtype: compute dtype; the softmax itself always runs in float32.
      torch_default_init: theta/phi/g/W weights and biases as PyTorch's default Conv init (GLTR's
        code); otherwise kaiming fan_out weights and zero biases (AP3D).
      ops: how the sub-sampling max-pool is computed (`layers.Ops`).
    """

    inner_dim: int | None = None
    pool_window: Sequence[int] | None = None
    scale: bool = False
    dtype: jnp.dtype = jnp.float32
    torch_default_init: bool = False
    ops: layers.Ops = layers.Ops()

    def _proj(self, features: int, fan_in: int, name: str) -> nn.Dense:
        # A 1x1(x1) conv is a Dense over the channel axis; the parameter shape is the squeezed kernel.
        if self.torch_default_init:
            inits = dict(
                kernel_init=layers.torch_default_kernel,
                bias_init=layers.torch_default_bias(fan_in),
            )
        else:
            inits = dict(kernel_init=layers.kaiming_fan_out, bias_init=nn.initializers.zeros)
        return nn.Dense(features, dtype=self.dtype, param_dtype=jnp.float32, name=name, **inits)

    @nn.compact
    def __call__(self, x, train: bool, mask=None):
        """Applies the block.

        Args:
          x: `[B, *positions, C]`.
          train: batch statistics (True) or running averages (False) in the output BN.
          mask: optional `[B, *positions]` bool, True where a position is real. Masked positions are
            never attended to and do not enter the BN statistics; only without `pool_window`.

        Returns:
          An array like `x`.
        """
        channels = x.shape[-1]
        inner = self.inner_dim or channels // 2
        x = x.astype(self.dtype)
        theta = self._proj(inner, channels, "theta")(x)
        phi = self._proj(inner, channels, "phi")(x)
        g = self._proj(inner, channels, "g")(x)
        if self.pool_window is not None:
            if mask is not None:
                raise ValueError("NonLocalBlock: a key mask cannot be combined with pool_window.")
            window = tuple(self.pool_window)
            phi = self.ops.max_pool(phi, window, strides=window)
            g = self.ops.max_pool(g, window, strides=window)
        batch = x.shape[0]
        theta = theta.reshape(batch, -1, inner)
        phi = phi.reshape(batch, -1, inner)
        g = g.reshape(batch, -1, inner)

        affinity = jnp.einsum("bnc,bmc->bnm", theta, phi).astype(jnp.float32)
        if self.scale:
            affinity = affinity / math.sqrt(inner)
        if mask is not None:
            keys = mask.reshape(batch, 1, -1)
            # finfo.min rather than -inf: a fully padded row gives uniform weights, not NaN.
            affinity = jnp.where(keys, affinity, jnp.finfo(jnp.float32).min)
        weights = jax.nn.softmax(affinity, axis=-1).astype(self.dtype)
        y = jnp.einsum("bnm,bmc->bnc", weights, g).reshape(*x.shape[:-1], inner)

        y = self._proj(channels, inner, "out_proj")(y)
        bn = layers.batch_norm(train, self.dtype, "out_bn", scale_init=nn.initializers.zeros)
        y = bn(y, mask=None if mask is None else mask[..., None])
        return x + y
