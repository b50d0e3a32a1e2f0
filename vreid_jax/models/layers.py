"""Building blocks shared by the models: dtypes, BatchNorm, the ported PyTorch initialisers and the
platform-chosen forms of conv and max-pool (`Ops`)."""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from flax import linen as nn

from vreid_jax.models.batch_norm import BatchNorm
from vreid_jax.models.cpu_ops import max_pool, pointwise_conv

# torchvision's ResNet convs and the re-ID heads' Dense layers: kaiming normal, fan_out, gain sqrt(2).
# PyTorch's kaiming_normal_ is an untruncated normal, hence 'normal' rather than 'truncated_normal'.
kaiming_fan_out = nn.initializers.variance_scaling(2.0, "fan_out", "normal")

# PyTorch's default Conv/Linear weight init, kaiming_uniform(a=sqrt(5)), is U(+-1/sqrt(fan_in)).
torch_default_kernel = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def torch_default_bias(fan_in: int):
    """PyTorch's default Conv/Linear bias init, U(+-1/sqrt(fan_in)) with fan_in of the weight."""
    bound = 1.0 / fan_in**0.5

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def compute_dtype(name: str) -> jnp.dtype:
    """The jnp dtype named by `config.model.dtype` (`registry.DTYPES`)."""
    return jnp.dtype(name)


def batch_norm(train: bool, dtype, name: str, scale_init=nn.initializers.ones) -> BatchNorm:
    """BatchNorm with PyTorch's defaults (momentum 0.1 there = 0.9 here, epsilon 1e-5) and training
    numerics (`vreid_jax.models.batch_norm`).

    No `axis_name`: under jit with a batch-sharded array the statistics are already global. The
    statistics are reduced and stored in float32 whatever the compute dtype.
    """
    return BatchNorm(
        use_running_average=not train,
        momentum=0.9,
        epsilon=1e-5,
        dtype=dtype,
        scale_init=scale_init,
        name=name,
    )


@dataclasses.dataclass(frozen=True)
class Ops:
    """How the models compute their convolutions and max-pools; no value or parameter depends on it.

    Attributes:
      fast_cpu: the CPU rewrites, 1x1 and temporal convs as matrix products and the other convs'
        weight gradients as im2col matrix products (`pointwise_conv`), and the max-pool as the
        maximum of its window's strided views with its own VJP (`max_pool.max_pool`). They make
        XLA:CPU's backward pass fast; elsewhere XLA's own conv and reduce-window are used.
      pool_ties: which input of a window with tied maxima gets its gradient: 'first' (the first in
        row-major order, PyTorch's rule, given by both forms above) or 'split' (shared equally,
        JAX's rule for the maximum of a reduction).
    """

    fast_cpu: bool = True
    pool_ties: str = "first"

    def conv(
        self, features, kernel_size, *, dtype, name, strides=1, padding="VALID", kernel_init=None
    ) -> nn.Conv:
        """A bias-free `nn.Conv` in `dtype` with float32 parameters (torchvision's init by default)."""
        ndim = len(kernel_size)
        if isinstance(strides, int):
            strides = (strides,) * ndim
        fast = (
            {"conv_general_dilated": pointwise_conv.conv_general_dilated} if self.fast_cpu else {}
        )
        return nn.Conv(
            features,
            kernel_size,
            strides=strides,
            padding=padding,
            use_bias=False,
            dtype=dtype,
            param_dtype=jnp.float32,
            kernel_init=kernel_init or kaiming_fan_out,
            name=name,
            **fast,
        )

    def max_pool(self, x, window, strides, padding=None):
        """Max-pools `x` `[..., *pooled, C]`, padding with -inf (`max_pool.max_pool`'s arguments)."""
        if self.pool_ties == "split":
            return max_pool.split_ties_max_pool(x, window, strides, padding)
        if self.fast_cpu:
            return max_pool.max_pool(x, window, strides, padding)
        return max_pool.reduce_window_max_pool(x, window, strides, padding)

    def max_pool_3x3_s2(self, x):
        """PyTorch's `MaxPool2d(3, stride=2, padding=1)` on `[..., H, W, C]` with any batch axes: the
        padding is -inf, as in PyTorch, and symmetric (not XLA's 'SAME')."""
        return self.max_pool(x, (3, 3), (2, 2), ((1, 1), (1, 1)))


def ops_for(fast_cpu_ops: str = "auto", max_pool_ties: str = "first") -> Ops:
    """The `Ops` that `config.model.fast_cpu_ops` / `max_pool_ties` ask for on this platform
    (`registry.FAST_CPU_OPS`, any case / `registry.POOL_TIES`); 'auto' turns the CPU rewrites on
    where JAX's default backend is the CPU."""
    fast_cpu_ops = str(fast_cpu_ops).lower()
    if fast_cpu_ops == "auto":
        return Ops(fast_cpu=jax.default_backend() == "cpu", pool_ties=max_pool_ties)
    return Ops(fast_cpu=fast_cpu_ops == "true", pool_ties=max_pool_ties)


def symmetric_padding(kernel_size: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """PyTorch's `padding=k // 2` on both spatial sides.

    XLA's 'SAME' pads a stride-2 conv asymmetrically (0 before, 1 after on even inputs) and would
    shift every strided feature map by one pixel relative to torchvision.
    """
    p = kernel_size // 2
    return ((p, p), (p, p))


def count_params(tree) -> int:
    """Number of scalars in a pytree of arrays or ShapeDtypeStructs."""
    return sum(math.prod(x.shape) for x in jax.tree.leaves(tree))
