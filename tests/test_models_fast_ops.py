"""The CPU-speed rewrites are exact: 1x1 convs as matrix products, larger convs' weight gradients as
im2col GEMMs, the stem max-pool."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from vreid_jax.models import layers, max_pool, pointwise_conv

CHANNELS_LAST = {
    3: ("NHC", "HIO", "NHC"),
    4: ("NHWC", "HWIO", "NHWC"),
    5: ("NDHWC", "DHWIO", "NDHWC"),
}


def _lax_conv(x, kernel, strides, padding):
    numbers = jax.lax.conv_dimension_numbers(x.shape, kernel.shape, CHANNELS_LAST[x.ndim])
    return jax.lax.conv_general_dilated(
        x, kernel, strides, padding, dimension_numbers=numbers, precision="highest"
    )


def _ours(x, kernel, strides, padding):
    numbers = jax.lax.conv_dimension_numbers(x.shape, kernel.shape, CHANNELS_LAST[x.ndim])
    return pointwise_conv.conv_general_dilated(
        x, kernel, strides, padding, dimension_numbers=numbers
    )


@pytest.mark.parametrize(
    "x_shape, strides",
    [
        ((2, 6, 4, 5), (1, 1)),
        ((2, 7, 5, 5), (2, 2)),  # odd sizes: ceil(size / stride) outputs, as the conv
        ((2, 3, 4, 4, 6), (1, 1, 1)),  # NL3D's 1x1x1
        ((3, 9, 4), (1,)),
    ],
)
def test_pointwise_conv_and_its_gradients_equal_the_convolution(x_shape, strides):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=x_shape), jnp.float32)
    kernel = jnp.asarray(rng.normal(size=(1,) * len(strides) + (x_shape[-1], 3)), jnp.float32)
    padding = [(0, 0)] * len(strides)
    expected, expected_vjp = jax.vjp(lambda a, b: _lax_conv(a, b, strides, padding), x, kernel)
    got, got_vjp = jax.vjp(lambda a, b: _ours(a, b, strides, padding), x, kernel)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    cotangent = jnp.asarray(rng.normal(size=expected.shape), jnp.float32)
    for g, e in zip(got_vjp(cotangent), expected_vjp(cotangent), strict=True):
        assert g.shape == e.shape
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "x_shape, kernel_hw, strides, padding",
    [
        ((2, 8, 6, 5), (3, 3), (1, 1), ((1, 1), (1, 1))),
        ((2, 9, 7, 5), (3, 3), (2, 2), ((1, 1), (1, 1))),  # odd sizes, strided
        ((2, 13, 11, 3), (7, 7), (2, 2), ((3, 3), (3, 3))),  # the stem
        ((2, 6, 5, 4), (3, 1), (1, 1), ((1, 1), (0, 0))),
    ],
)
def test_im2col_weight_gradient_equals_the_convolution(x_shape, kernel_hw, strides, padding):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=x_shape), jnp.float32)
    kernel = jnp.asarray(rng.normal(size=(*kernel_hw, x_shape[-1], 6)), jnp.float32)
    expected, expected_vjp = jax.vjp(lambda a, b: _lax_conv(a, b, strides, padding), x, kernel)
    got, got_vjp = jax.vjp(lambda a, b: _ours(a, b, strides, padding), x, kernel)
    assert "custom_vjp_call" in str(
        jax.make_jaxpr(lambda a, b: _ours(a, b, strides, padding))(x, kernel)
    )
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    cotangent = jnp.asarray(rng.normal(size=expected.shape), jnp.float32)
    for g, e in zip(got_vjp(cotangent), expected_vjp(cotangent), strict=True):
        assert g.shape == e.shape
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "kernel_shape, padding",
    [((3, 3, 4, 2), [(1, 1), (1, 1)]), ((1, 1, 4, 2), [(1, 1), (1, 1)]), ((1, 1, 4, 2), "SAME")],
)
def test_other_convolutions_go_to_lax_unchanged(kernel_shape, padding):
    x = jnp.ones((1, 5, 5, 4))
    kernel = jnp.ones(kernel_shape)
    jaxpr = str(jax.make_jaxpr(lambda a, b: _ours(a, b, (1, 1), padding))(x, kernel))
    assert "conv_general_dilated" in jaxpr and "dot_general" not in jaxpr


def test_project_convs_use_the_matmul_for_1x1_only():
    x = jnp.ones((2, 8, 8, 4))

    def apply(kernel_size):
        conv = layers.conv(6, kernel_size, dtype=jnp.float32, name="c")
        params = conv.init(jax.random.key(0), x)
        return str(jax.make_jaxpr(jax.grad(lambda p: conv.apply(p, x).sum()))(params))

    assert "conv_general_dilated" not in apply((1, 1))
    assert "conv_general_dilated" in apply((3, 3))


def test_pointwise_conv_in_bfloat16_keeps_dtypes():
    x = jnp.ones((2, 4, 4, 8), jnp.bfloat16)
    kernel = jnp.full((1, 1, 8, 3), 0.5, jnp.bfloat16)
    y, vjp = jax.vjp(lambda a, b: _ours(a, b, (1, 1), "VALID"), x, kernel)
    grad_x, grad_kernel = vjp(jnp.ones_like(y))
    assert (y.dtype, grad_x.dtype, grad_kernel.dtype) == (jnp.bfloat16,) * 3
    np.testing.assert_array_equal(np.asarray(y, np.float32), 4.0)
    np.testing.assert_array_equal(np.asarray(grad_kernel, np.float32), 32.0)


@pytest.mark.parametrize("shape", [(2, 8, 6, 3), (2, 9, 7, 3), (2, 3, 5, 4, 2)])
def test_max_pool_equals_reduce_window_with_minus_inf_padding(shape):
    x = jnp.asarray(np.random.default_rng(0).normal(size=shape), jnp.float32)
    pads = [(0, 0)] * (x.ndim - 3) + [(1, 1), (1, 1), (0, 0)]
    padded = jnp.pad(x, pads, constant_values=-jnp.inf).reshape(
        (-1, *np.add(shape[-3:], (2, 2, 0)))
    )
    expected = nn.max_pool(padded, (3, 3), strides=(2, 2), padding="VALID")
    got = layers.max_pool_3x3_s2(x)
    np.testing.assert_array_equal(got.reshape(expected.shape), expected)
    # Without ties the gradient is the reduce-window one.
    grad = jax.grad(lambda a: (layers.max_pool_3x3_s2(a) ** 2).sum())(x)
    grad_ref = jax.grad(
        lambda a: (
            nn.max_pool(
                jnp.pad(a, pads, constant_values=-jnp.inf).reshape(padded.shape),
                (3, 3),
                strides=(2, 2),
                padding="VALID",
            )
            ** 2
        ).sum()
    )(x)
    np.testing.assert_allclose(grad, grad_ref, rtol=1e-6)


@pytest.mark.parametrize(
    "shape, window",
    [((2, 4, 8, 6, 3), (1, 2, 2)), ((2, 3, 9, 7, 3), (1, 2, 2)), ((3, 8, 6, 2), (2, 2))],
)
def test_non_overlapping_max_pool_equals_nn_max_pool(shape, window):
    # The non-local blocks' subsampling; odd sizes drop the last row/column, as 'VALID'.
    x = jnp.asarray(np.random.default_rng(1).normal(size=shape), jnp.float32)
    cotangent = None
    results = []
    for pool in (max_pool.max_pool, nn.max_pool):
        y, vjp = jax.vjp(lambda a, pool=pool: pool(a, window, strides=window), x)
        if cotangent is None:
            cotangent = jnp.asarray(np.random.default_rng(2).normal(size=y.shape), jnp.float32)
        results.append((y, vjp(cotangent)[0]))
    (y, grad), (y_ref, grad_ref) = results
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(grad, grad_ref)


def test_max_pool_gives_a_tied_window_gradient_to_its_first_maximum():
    # All zeros, as after a ReLU: PyTorch sends each window's gradient to its first element in
    # row-major order (the top-left of the window, or the first real pixel next to the padding).
    x = jnp.zeros((1, 4, 4, 1))
    grad = jax.grad(lambda a: layers.max_pool_3x3_s2(a).sum())(x)[0, :, :, 0]
    # Windows start at rows/cols -1 and 1; their first real pixels are (0|1, 0|1).
    expected = np.zeros((4, 4))
    expected[np.ix_([0, 1], [0, 1])] = 1.0
    np.testing.assert_array_equal(grad, expected)
