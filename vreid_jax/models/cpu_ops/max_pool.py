"""Max-pooling with a chosen gradient rule for ties; on CPU written so that XLA differentiates it fast.

`nn.max_pool`'s gradient compiles on XLA:CPU to a variadic reduce-window that carries one iota index
array per axis, several times slower than the pool itself (`benchmarks/README.md`). Here the pool is
the maximum of the window's strided views of the padded input, with its own VJP: the forward pass
keeps the index of the winning view, and the backward pass sends each output's gradient to that one
input with a select and a strided pad per view.

The winner is the first maximum of its window in row-major order, which is PyTorch's rule, and also
what XLA's own pool gradient (select-and-scatter with a `>=` selector) does; `reduce_window_max_pool`
is that op, for the platforms where XLA's pool is the fast one. `split_ties_max_pool` follows JAX's
rule for a reduction's maximum instead: tied maxima share the gradient equally. Ties are common where
the pool follows a ReLU (zeros), so the choice shows in the parameter gradients.
"""

from __future__ import annotations

import functools
import itertools

import jax
import jax.numpy as jnp
from jax import lax


def max_pool(x, window, strides, padding=None):
    """Max-pools `x` `[..., *spatial, C]` over its `len(window)` axes before the channel axis; the
    gradient goes to each window's first maximum (PyTorch's rule), by the CPU-fast custom VJP.

    Args:
      x: any leading batch axes, then the pooled axes, then channels.
      window: window size per pooled axis.
      strides: stride per pooled axis.
      padding: `(low, high)` per pooled axis, filled with -inf as in PyTorch; None for none.
        Windows that do not fit are dropped (PyTorch's floor mode, XLA's 'VALID').
    """
    return _max_pool(x, *_normalized(window, strides, padding))


def reduce_window_max_pool(x, window, strides, padding=None):
    """`max_pool` as XLA's own reduce-window; its gradient (select-and-scatter, `>=` selector) also
    goes to each window's first maximum. The fast form on GPU and TPU; the arguments as `max_pool`'s.
    """
    window, strides, padding = _normalized(window, strides, padding)
    lead = x.ndim - 1 - len(window)
    return lax.reduce_window(
        x,
        -jnp.inf,
        lax.max,
        (1,) * lead + window + (1,),
        (1,) * lead + strides + (1,),
        ((0, 0),) * lead + padding + ((0, 0),),
    )


def split_ties_max_pool(x, window, strides, padding=None):
    """`max_pool` whose gradient is shared equally by a window's tied maxima (JAX's rule for the
    maximum of a reduction); the arguments as `max_pool`'s."""
    views = _views(x, *_normalized(window, strides, padding))[1]
    return jnp.max(jnp.stack(views), axis=0)


def _normalized(window, strides, padding):
    window, strides = tuple(window), tuple(strides)
    padding = tuple(map(tuple, padding)) if padding else ((0, 0),) * len(window)
    return window, strides, padding


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def _max_pool(x, window, strides, padding):
    # Without a gradient only the maximum is needed: no winner index, no comparisons (which
    # TensorFlow Lite also refuses on 5-D clips).
    return functools.reduce(jnp.maximum, _views(x, window, strides, padding)[1])


def _geometry(shape, window, strides, padding):
    """The padded shape, the output size per pooled axis and every window offset (row-major)."""
    pooled_axes = len(window)
    lead = len(shape) - 1 - pooled_axes
    padded = list(shape)
    for axis, (low, high) in enumerate(padding):
        padded[lead + axis] += low + high
    sizes = padded[lead : lead + pooled_axes]
    out = [(s - w) // st + 1 for s, w, st in zip(sizes, window, strides, strict=True)]
    return tuple(padded), out, list(itertools.product(*(range(w) for w in window)))


def _views(x, window, strides, padding):
    """The padded shape and the window's strided views of the -inf-padded `x`, one per offset."""
    padded_shape, out, offsets = _geometry(x.shape, window, strides, padding)
    lead = x.ndim - 1 - len(window)
    padded = jnp.pad(x, [(0, 0)] * lead + list(padding) + [(0, 0)], constant_values=-jnp.inf)
    # lax.slice, not `padded[...]`: under a symbolic batch size (vreid_jax.deploy.export) indexing
    # would become a gather, which TFLite and the ONNX converter do not take.
    views = [
        jax.lax.slice(
            padded,
            (0,) * lead + tuple(offset) + (0,),
            padded.shape[:lead]
            + tuple(o + st * (n - 1) + 1 for o, st, n in zip(offset, strides, out, strict=True))
            + padded.shape[-1:],
            (1,) * lead + tuple(strides) + (1,),
        )
        for offset in offsets
    ]
    return padded_shape, views


def _forward(x, window, strides, padding):
    padded_shape, views = _views(x, window, strides, padding)
    pooled = views[0]
    argmax = jnp.zeros(pooled.shape, jnp.int8 if len(views) < 128 else jnp.int32)
    for k, view in enumerate(views[1:], start=1):
        better = view > pooled  # strict: the first maximum keeps ties
        pooled, argmax = jnp.where(better, view, pooled), jnp.where(better, k, argmax)
    return pooled, (argmax, padded_shape)


def _max_pool_fwd(x, window, strides, padding):
    return _forward(x, window, strides, padding)


def _max_pool_bwd(window, strides, padding, residuals, grad):
    argmax, padded_shape = residuals
    _, out, offsets = _geometry(padded_shape, window, strides, ((0, 0),) * len(window))
    lead = grad.ndim - 1 - len(window)
    zero = jnp.zeros((), grad.dtype)
    grad_padded = jnp.zeros(padded_shape, grad.dtype)
    for k, offset in enumerate(offsets):
        # Places output i of this view at padded position offset + stride * i.
        config = [(0, 0, 0)] * lead
        for axis, (o, st, n) in enumerate(zip(offset, strides, out, strict=True)):
            extent = st * (n - 1) + 1
            config.append((o, padded_shape[lead + axis] - o - extent, st - 1))
        config.append((0, 0, 0))
        grad_padded += jax.lax.pad(jnp.where(argmax == k, grad, zero), zero, config)
    unpad = (Ellipsis,) + tuple(
        slice(low, padded_shape[lead + axis] - high) for axis, (low, high) in enumerate(padding)
    ) + (slice(None),)  # fmt: skip
    return (grad_padded[unpad],)


_max_pool.defvjp(_max_pool_fwd, _max_pool_bwd)
