"""Building blocks shared by the models: dtypes, BatchNorm and the ported PyTorch initialisers."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import linen as nn

from vreid_jax.models import pointwise_conv

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}

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
    """Maps the `config.model.dtype` string to a jnp dtype."""
    if name not in _DTYPES:
        raise ValueError(f"config.model.dtype={name!r}; expected one of {sorted(_DTYPES)}.")
    return _DTYPES[name]


def batch_norm(train: bool, dtype, name: str, scale_init=nn.initializers.ones) -> nn.BatchNorm:
    """BatchNorm with PyTorch's defaults (momentum 0.1 there = 0.9 here, epsilon 1e-5).

    No `axis_name`: under jit with a batch-sharded array the statistics are already global. The
    statistics are reduced and stored in float32 whatever the compute dtype.
    """
    return nn.BatchNorm(
        use_running_average=not train,
        momentum=0.9,
        epsilon=1e-5,
        dtype=dtype,
        param_dtype=jnp.float32,
        scale_init=scale_init,
        name=name,
    )


def conv(features, kernel_size, *, dtype, name, strides=1, padding="VALID", kernel_init=None):
    """A bias-free `nn.Conv` in `dtype` with float32 parameters (torchvision's init by default).

    1x1 convs run as matrix products (`pointwise_conv`): same result, faster backward pass on CPU.
    """
    ndim = len(kernel_size)
    if isinstance(strides, int):
        strides = (strides,) * ndim
    return nn.Conv(
        features,
        kernel_size,
        strides=strides,
        padding=padding,
        use_bias=False,
        dtype=dtype,
        param_dtype=jnp.float32,
        kernel_init=kernel_init or kaiming_fan_out,
        conv_general_dilated=pointwise_conv.conv_general_dilated,
        name=name,
    )


def symmetric_padding(kernel_size: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """PyTorch's `padding=k // 2` on both spatial sides.

    XLA's 'SAME' pads a stride-2 conv asymmetrically (0 before, 1 after on even inputs) and would
    shift every strided feature map by one pixel relative to torchvision.
    """
    p = kernel_size // 2
    return ((p, p), (p, p))


def _pool_windows(x):
    """The -inf padded input and its 9 strided views, one per 3x3 window offset (row-major)."""
    height, width = x.shape[-3:-1]
    out_h, out_w = (height - 1) // 2 + 1, (width - 1) // 2 + 1
    pads = [(0, 0)] * (x.ndim - 3) + [(1, 1), (1, 1), (0, 0)]
    padded = jnp.pad(x, pads, constant_values=-jnp.inf)
    offsets = [(i, j) for i in range(3) for j in range(3)]
    views = [
        padded[..., i : i + 2 * out_h - 1 : 2, j : j + 2 * out_w - 1 : 2, :] for i, j in offsets
    ]
    return padded, offsets, views


@jax.custom_vjp
def max_pool_3x3_s2(x):
    """PyTorch's `MaxPool2d(3, stride=2, padding=1)` on `[..., H, W, C]` with any batch axes.

    The padding is -inf, as in PyTorch, and symmetric (not XLA's 'SAME'). Written as the maximum of
    the 9 strided views of the padded input, with its own gradient: each output's gradient goes to
    the first maximum of its window in row-major order, as in PyTorch (JAX's own rule for a maximum
    splits ties, and the ReLU before the pool makes ties of zeros common). XLA:CPU runs this several
    times faster than the reduce-window gradient of `nn.max_pool` (`benchmarks/README.md`).
    """
    return _max_pool_fwd(x)[0]


def _max_pool_fwd(x):
    padded, _, views = _pool_windows(x)
    pooled, argmax = views[0], jnp.zeros(views[0].shape, jnp.int8)
    for k, view in enumerate(views[1:], start=1):
        better = view > pooled  # strict: the first maximum wins ties
        pooled, argmax = jnp.where(better, view, pooled), jnp.where(better, k, argmax)
    return pooled, (argmax, padded.shape)


def _max_pool_bwd(residuals, grad):
    argmax, padded_shape = residuals
    out_h, out_w = grad.shape[-3:-1]
    zero = jnp.zeros((), grad.dtype)
    grad_padded = jnp.zeros(padded_shape, grad.dtype)
    for k, (i, j) in enumerate((i, j) for i in range(3) for j in range(3)):
        config = [(0, 0, 0)] * (grad.ndim - 3) + [
            (i, padded_shape[-3] - i - (2 * out_h - 1), 1),
            (j, padded_shape[-2] - j - (2 * out_w - 1), 1),
            (0, 0, 0),
        ]
        grad_padded += jax.lax.pad(jnp.where(argmax == k, grad, zero), zero, config)
    return (grad_padded[..., 1:-1, 1:-1, :],)


max_pool_3x3_s2.defvjp(_max_pool_fwd, _max_pool_bwd)


def count_params(tree) -> int:
    """Number of scalars in a pytree of arrays or ShapeDtypeStructs."""
    return sum(math.prod(x.shape) for x in jax.tree.leaves(tree))
