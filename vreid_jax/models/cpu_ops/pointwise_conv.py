"""A drop-in for `lax.conv_general_dilated` that runs 1x1 (x1) convolutions as matrix products, the
weight gradient of larger 2-D convolutions as one matrix product over image patches (im2col), and
`t x 1 x 1` temporal convolutions as one matrix product over time-shifted frames.

Why: on XLA:CPU the weight gradient of a 1x1 convolution is lowered to a convolution whose "kernel"
is the output gradient, which runs several times slower than the equivalent matrix product
(`benchmarks/README.md`, per-convolution timings). ResNet-50's bottlenecks are mostly 1x1 convs, so
this one backward op was most of the gap to PyTorch. Written as a matrix product over the channel
axis, the forward pass, the input gradient and the weight gradient are three plain GEMMs, which
every backend runs at full speed.

The result equals the convolution up to float rounding (same products, a different summation
order); the kernel keeps its shape, so checkpoints and converted weights are unchanged. The kxk
case is the same story for its weight gradient only (`im2col_conv`); the temporal case for the
whole conv (`temporal_conv`). Any other convolution goes to `lax.conv_general_dilated` unchanged.
The models use this module where `config.model.fast_cpu_ops` says so (`layers.Ops`): on CPU by default.
"""

from __future__ import annotations

import functools

import jax
from jax import lax


def _channels_last_undilated(kernel, lhs_dilation, rhs_dilation, numbers, groups) -> bool:
    """The form every rewrite here needs: channels-last input/output (N...C) and kernel (...IO),
    no dilation, one group."""
    ndim, spatial = kernel.ndim, kernel.ndim - 2
    return (
        numbers is not None
        and tuple(numbers.lhs_spec) == (0, ndim - 1, *range(1, ndim - 1))
        and tuple(numbers.rhs_spec) == (ndim - 1, ndim - 2, *range(spatial))
        and tuple(numbers.out_spec) == tuple(numbers.lhs_spec)
        and all(d == 1 for d in (lhs_dilation or (1,) * spatial))
        and all(d == 1 for d in (rhs_dilation or (1,) * spatial))
        and groups == 1
    )


def _is_pointwise(kernel, padding) -> bool:
    """A 1x1 (x1) conv without padding."""
    no_padding = padding == "VALID" or (
        not isinstance(padding, str) and all(tuple(p) == (0, 0) for p in padding)
    )
    return no_padding and all(k == 1 for k in kernel.shape[:-2])


@jax.custom_vjp
def channel_matmul(x, weight):
    """`x [..., C_in] @ weight [C_in, C_out]`, with both gradients as explicit GEMMs."""
    return lax.dot_general(x, weight, (((x.ndim - 1,), (0,)), ((), ())))


def _channel_matmul_fwd(x, weight):
    return channel_matmul(x, weight), (x, weight)


def _channel_matmul_bwd(residuals, grad):
    x, weight = residuals
    grad_x = lax.dot_general(grad, weight, (((grad.ndim - 1,), (1,)), ((), ())))
    # One [N, C_in]^T [N, C_out] product over all N positions. Kept 2-D on purpose: XLA:CPU runs it
    # in place, whereas contracting the 4-D arrays made it copy x into a transposed layout and
    # recompute x's whole chain of elementwise producers (BN, ReLU, residual adds) inside that copy.
    rows = x.size // x.shape[-1]
    grad_weight = lax.dot_general(
        x.reshape(rows, -1), grad.reshape(rows, -1), (((0,), (0,)), ((), ()))
    )
    return grad_x.astype(x.dtype), grad_weight.astype(weight.dtype)


channel_matmul.defvjp(_channel_matmul_fwd, _channel_matmul_bwd)


def _is_im2col_candidate(kernel, padding) -> bool:
    """A 2-D conv with a kernel larger than 1x1 and explicit padding. (Like the whole module, only
    used where `config.model.fast_cpu_ops` is on: elsewhere the im2col copy would cost memory for
    nothing.)"""
    return (
        kernel.ndim == 4 and not isinstance(padding, str) and kernel.shape[0] * kernel.shape[1] > 1
    )


def _conv_nhwc(x, kernel, strides, padding):
    return lax.conv_general_dilated(
        x, kernel, strides, padding, dimension_numbers=("NHWC", "HWIO", "NHWC")
    )


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def im2col_conv(x, kernel, strides, padding):
    """A 2-D NHWC/HWIO convolution; forward and input gradient are lax's, the weight gradient one
    GEMM of the im2col patches.

    Why: XLA:CPU lowers the weight gradient of a kxk convolution to a convolution whose "kernel" is
    the output gradient (a 64x32 window at ResNet's res2 on 256x128 frames), which YNNPACK runs on
    one thread, slowly; as `[N*H*W, k*k*C_in]^T [N*H*W, C_out]` it is a plain GEMM on every core
    (`benchmarks/conv_backward.py`). Same products, another summation order.
    """
    return _conv_nhwc(x, kernel, strides, padding)


def _im2col_conv_fwd(x, kernel, strides, padding):
    return _conv_nhwc(x, kernel, strides, padding), (x, kernel)


def _im2col_conv_bwd(strides, padding, residuals, grad):
    x, kernel = residuals
    _, input_vjp = jax.vjp(lambda a: _conv_nhwc(a, kernel, strides, padding), x)
    (grad_x,) = input_vjp(grad)
    kh, kw, c_in, c_out = kernel.shape
    padded = jax.numpy.pad(x, ((0, 0), *padding, (0, 0)))
    n, out_h, out_w, _ = grad.shape
    patches = [
        lax.slice(
            padded,
            (0, i, j, 0),
            (n, i + (out_h - 1) * strides[0] + 1, j + (out_w - 1) * strides[1] + 1, c_in),
            (1, *strides, 1),
        )
        for i in range(kh)
        for j in range(kw)
    ]
    rows = n * out_h * out_w
    columns = jax.numpy.concatenate(patches, axis=-1).reshape(rows, kh * kw * c_in)
    grad_kernel = lax.dot_general(
        columns, grad.reshape(rows, c_out), (((0,), (0,)), ((), ()))
    ).reshape(kh, kw, c_in, c_out)
    return grad_x.astype(x.dtype), grad_kernel.astype(kernel.dtype)


im2col_conv.defvjp(_im2col_conv_fwd, _im2col_conv_bwd)


def _is_temporal(kernel, strides, padding) -> bool:
    """A `t x 1 x 1` 3-D conv (the temporal half of a (2+1)D conv) with stride 1 and explicit
    padding on the time axis only."""
    return (
        kernel.ndim == 5
        and kernel.shape[0] > 1
        and kernel.shape[1:3] == (1, 1)
        and all(s == 1 for s in strides)
        and not isinstance(padding, str)
        and all(tuple(p) == (0, 0) for p in padding[1:])
    )


def temporal_conv(x, kernel, time_padding):
    """A `t x 1 x 1` convolution of `x` `[B, T, H, W, C_in]` with `kernel` `[t, 1, 1, C_in, C_out]`:
    the `t` time-shifted views of the padded clip side by side on the channel axis, times the kernel
    as a `[t*C_in, C_out]` matrix (`channel_matmul`, so both gradients are GEMMs too).

    Why: XLA:CPU runs this 3-D conv slower than the GEMMs, most of all its weight gradient
    (`benchmarks/temporal_conv.py` times NL3D's temporal convs both ways; `benchmarks/README.md`
    has the numbers). The price is the shifted copy, `t` times the input, kept for the backward
    pass.
    """
    t = kernel.shape[0]
    padded = jax.numpy.pad(x, ((0, 0), time_padding, (0, 0), (0, 0), (0, 0)))
    frames = padded.shape[1] - t + 1
    shifted = [lax.slice_in_dim(padded, i, i + frames, axis=1) for i in range(t)]
    return channel_matmul(
        jax.numpy.concatenate(shifted, axis=-1), kernel.reshape(-1, kernel.shape[-1])
    )


def conv_general_dilated(
    lhs,
    rhs,
    window_strides,
    padding,
    lhs_dilation=None,
    rhs_dilation=None,
    dimension_numbers=None,
    feature_group_count=1,
    precision=None,
    **kwargs,
):
    """`lax.conv_general_dilated` with 1x1 channels-last convolutions done by `channel_matmul`, the
    weight gradient of larger 2-D channels-last convolutions by `im2col_conv` and temporal
    `t x 1 x 1` convolutions by `temporal_conv`."""
    form = (lhs_dilation, rhs_dilation, dimension_numbers, feature_group_count)
    if not kwargs and precision is None and _channels_last_undilated(rhs, *form):
        if _is_temporal(rhs, window_strides, padding):
            return temporal_conv(lhs, rhs, tuple(padding[0]))
        if _is_im2col_candidate(rhs, padding):
            return im2col_conv(lhs, rhs, tuple(window_strides), tuple(map(tuple, padding)))
        if _is_pointwise(rhs, padding):
            # A strided 1x1 conv reads every stride-th position (VALID: ceil(size / stride)
            # outputs). lax.slice rather than indexing, which becomes a gather under symbolic
            # shapes (export).
            strided = lax.slice(lhs, (0,) * lhs.ndim, lhs.shape, (1, *window_strides, 1))
            return channel_matmul(strided, rhs.reshape(rhs.shape[-2:]))
    return lax.conv_general_dilated(
        lhs,
        rhs,
        window_strides,
        padding,
        lhs_dilation=lhs_dilation,
        rhs_dilation=rhs_dilation,
        dimension_numbers=dimension_numbers,
        feature_group_count=feature_group_count,
        precision=precision,
        **kwargs,
    )
