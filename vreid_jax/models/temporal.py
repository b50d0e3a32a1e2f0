"""The temporal half of a (2+1)D factorised conv: a t x 1 x 1 conv over NTHWC clips.

Initialisation: 'inflate' puts identity/t on every tap, so spatial 2D kernel
followed by this conv equals the I3D inflation of the 2D kernel (replicated over t taps, divided by
t); 'center' puts the identity on the middle tap only, so the pair equals the 2D kernel applied frame
by frame. The paddings and inits are `registry.TEMPORAL_PADDINGS` and `registry.TEMPORAL_INITS`.
"""

from __future__ import annotations

import jax.numpy as jnp

from vreid_jax.models import layers


def identity_taps(kernel_size: int, channels: int, mode: str) -> jnp.ndarray:
    """A `[t, 1, 1, C, C]` kernel: identity/t on every tap ('inflate') or on the centre ('center')."""
    eye = jnp.eye(channels, dtype=jnp.float32)
    if mode == "inflate":
        taps = jnp.full((kernel_size,), 1.0 / kernel_size, jnp.float32)
    else:  # 'center'
        taps = jnp.zeros((kernel_size,), jnp.float32).at[kernel_size // 2].set(1.0)
    return (taps[:, None, None] * eye)[:, None, None]


def temporal_conv(
    x,
    *,
    kernel_size: int,
    padding: str,
    init: str,
    dtype,
    name: str,
    ops: layers.Ops,
):
    """Applies a bias-free `t x 1 x 1` conv (stride 1, length preserving) to `x` `[B, T, H, W, C]`.

    Must be called inside a compact method: it creates the `nn.Conv` named `name` in the caller.
    'zeros' pads like I3D (border frames see (t-1)/t of a constant signal at 'inflate' init); 'edge'
    replicates the border frames, so a temporally constant clip stays exact everywhere.
    """
    half = kernel_size // 2
    if padding == "edge":
        x = jnp.pad(x, ((0, 0), (half, half), (0, 0), (0, 0), (0, 0)), mode="edge")
        pads = ((0, 0), (0, 0), (0, 0))
    else:
        pads = ((half, half), (0, 0), (0, 0))
    channels = x.shape[-1]
    return ops.conv(
        channels,
        (kernel_size, 1, 1),
        padding=pads,
        dtype=dtype,
        name=name,
        kernel_init=lambda key, shape, dtype=jnp.float32: identity_taps(
            kernel_size, channels, init
        ).astype(dtype),
    )(x)
