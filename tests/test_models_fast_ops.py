"""The CPU-speed rewrites are exact: 1x1 and temporal convs as matrix products, larger convs' weight
gradients as im2col GEMMs, the stem max-pool."""

import functools

import helpers
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from vreid_jax import models
from vreid_jax.models import layers
from vreid_jax.models.cpu_ops import max_pool, pointwise_conv

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


def _assert_equals_lax(x, kernel, strides, padding, rng, gradient_tolerance):
    """Our conv's values and both gradients equal lax's up to float rounding; returns our VJP."""
    expected, expected_vjp = jax.vjp(lambda a, b: _lax_conv(a, b, strides, padding), x, kernel)
    got, got_vjp = jax.vjp(lambda a, b: _ours(a, b, strides, padding), x, kernel)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    cotangent = jnp.asarray(rng.normal(size=expected.shape), jnp.float32)
    for g, e in zip(got_vjp(cotangent), expected_vjp(cotangent), strict=True):
        assert g.shape == e.shape
        np.testing.assert_allclose(g, e, rtol=gradient_tolerance, atol=gradient_tolerance)
    return got_vjp


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
    _assert_equals_lax(x, kernel, strides, [(0, 0)] * len(strides), rng, 1e-5)


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
    assert "custom_vjp_call" in str(
        jax.make_jaxpr(lambda a, b: _ours(a, b, strides, padding))(x, kernel)
    )
    _assert_equals_lax(x, kernel, strides, padding, rng, 1e-4)


@pytest.mark.parametrize(
    "t, time_padding",
    [(3, (1, 1)), (3, (0, 0)), (5, (2, 2))],  # zeros padding; 'edge' (padded before); 5 taps
)
def test_temporal_conv_and_its_gradients_equal_the_convolution(t, time_padding):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(2, 6, 3, 2, 5)), jnp.float32)
    kernel = jnp.asarray(rng.normal(size=(t, 1, 1, 5, 4)), jnp.float32)
    padding = [time_padding, (0, 0), (0, 0)]
    got_vjp = _assert_equals_lax(x, kernel, (1, 1, 1), padding, rng, 1e-4)
    # Forward and both gradients are matrix products.
    cotangent = jnp.zeros((2, 6 + sum(time_padding) - t + 1, 3, 2, 4))
    assert "conv_general_dilated" not in str(jax.make_jaxpr(got_vjp)(cotangent))
    forward = jax.make_jaxpr(lambda a, b: _ours(a, b, (1, 1, 1), padding))(x, kernel)
    assert "conv_general_dilated" not in str(forward)


@pytest.mark.parametrize(
    "x_shape, kernel_shape, strides, padding",
    [
        ((1, 5, 5, 4), (3, 3, 4, 2), (1, 1), [(1, 1), (1, 1)]),  # 3x3 forward
        ((1, 5, 5, 4), (1, 1, 4, 2), (1, 1), [(1, 1), (1, 1)]),  # padded 1x1
        ((1, 5, 5, 4), (1, 1, 4, 2), (1, 1), "SAME"),
        ((1, 5, 4, 4, 4), (3, 1, 1, 4, 2), (2, 1, 1), [(1, 1), (0, 0), (0, 0)]),  # strided in time
        ((1, 5, 4, 4, 4), (3, 1, 1, 4, 2), (1, 1, 1), [(1, 1), (1, 1), (0, 0)]),  # padded in space
        ((1, 5, 4, 4, 4), (3, 3, 3, 4, 2), (1, 1, 1), [(1, 1), (1, 1), (1, 1)]),  # a 3-D kernel
    ],
)
def test_other_convolutions_go_to_lax_unchanged(x_shape, kernel_shape, strides, padding):
    x, kernel = jnp.ones(x_shape), jnp.ones(kernel_shape)
    jaxpr = str(jax.make_jaxpr(lambda a, b: _ours(a, b, strides, padding))(x, kernel))
    assert "conv_general_dilated" in jaxpr and "dot_general" not in jaxpr


def test_project_convs_use_the_matmul_for_1x1_only():
    x = jnp.ones((2, 8, 8, 4))

    def apply(kernel_size):
        conv = layers.Ops().conv(6, kernel_size, dtype=jnp.float32, name="c")
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
    got = layers.Ops().max_pool_3x3_s2(x)
    np.testing.assert_array_equal(got.reshape(expected.shape), expected)
    # Without ties the gradient is the reduce-window one.
    grad = jax.grad(lambda a: (layers.Ops().max_pool_3x3_s2(a) ** 2).sum())(x)
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
    grad = jax.grad(lambda a: layers.Ops().max_pool_3x3_s2(a).sum())(x)[0, :, :, 0]
    # Windows start at rows/cols -1 and 1; their first real pixels are (0|1, 0|1).
    expected = np.zeros((4, 4))
    expected[np.ix_([0, 1], [0, 1])] = 1.0
    np.testing.assert_array_equal(grad, expected)


# ----------------------------------------------------------------------------- platform choice


def test_auto_turns_the_cpu_rewrites_on_for_the_cpu_only(monkeypatch):
    assert layers.ops_for("auto") == layers.Ops(fast_cpu=True, pool_ties="first")
    assert layers.ops_for("false").fast_cpu is False
    assert layers.ops_for("TRUE").fast_cpu is True
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    assert layers.ops_for("auto").fast_cpu is False
    assert layers.ops_for("true", "split") == layers.Ops(fast_cpu=True, pool_ties="split")


def test_without_the_rewrites_xla_runs_its_own_conv_and_pool():
    x = jnp.ones((2, 8, 8, 4))
    ops = layers.Ops(fast_cpu=False)

    def loss(a):
        conv = ops.conv(6, (1, 1), dtype=jnp.float32, name="c")
        return ops.max_pool_3x3_s2(conv.apply(conv.init(jax.random.key(0), a), a)).sum()

    jaxpr = str(jax.make_jaxpr(jax.grad(loss))(x))
    assert "conv_general_dilated" in jaxpr and "dot_general" not in jaxpr
    assert "reduce_window_max" in jaxpr and "select_and_scatter_add" in jaxpr


@pytest.mark.parametrize("shape, window, strides, padding", [
    ((2, 9, 7, 3), (3, 3), (2, 2), ((1, 1), (1, 1))),  # the stem pool
    ((2, 4, 8, 6, 3), (1, 2, 2), (1, 2, 2), None),  # the non-local sub-sampling
])  # fmt: skip
def test_both_forms_give_the_first_maximum_the_gradient_of_a_tie(shape, window, strides, padding):
    # Small integers: most windows hold tied maxima.
    x = jnp.asarray(np.random.default_rng(3).integers(0, 3, shape), jnp.float32)
    results = []
    for fast_cpu in (True, False):
        pool = layers.Ops(fast_cpu=fast_cpu).max_pool
        y, vjp = jax.vjp(lambda a, pool=pool: pool(a, window, strides, padding), x)
        cotangent = jnp.arange(y.size, dtype=jnp.float32).reshape(y.shape)
        results.append((y, vjp(cotangent)[0]))
    (y_fast, grad_fast), (y_xla, grad_xla) = results
    np.testing.assert_array_equal(y_fast, y_xla)
    np.testing.assert_array_equal(grad_fast, grad_xla)


def test_split_ties_share_a_windows_gradient_equally():
    x = jnp.zeros((1, 4, 4, 1))  # All tied, as after a ReLU.
    grad = jax.grad(lambda a: layers.Ops(pool_ties="split").max_pool_3x3_s2(a).sum())(x)[0, ..., 0]
    # Four windows (rows/cols from -1 and 1); each spreads its 1 over its real pixels.
    windows = [(slice(0, 2), slice(0, 2)), (slice(0, 2), slice(1, 4)), (slice(1, 4), slice(0, 2)),
               (slice(1, 4), slice(1, 4))]  # fmt: skip
    expected = np.zeros((4, 4))
    for r, c in windows:
        expected[r, c] += 1.0 / expected[r, c].size
    np.testing.assert_allclose(grad, expected, rtol=1e-6)
    distinct = jnp.arange(16.0).reshape(1, 4, 4, 1)
    np.testing.assert_array_equal(
        layers.Ops(pool_ties="split").max_pool_3x3_s2(distinct),
        layers.Ops().max_pool_3x3_s2(distinct),
    )


@pytest.mark.slow  # A whole model both ways: the full tier (the ops one by one are above).
def test_models_compute_the_same_with_and_without_the_rewrites():
    # The whole train-mode forward pass and every parameter gradient of a tiny NL3D, both ways: it
    # holds every rewritten op (1x1, kxk, strided and temporal convs, the stem and non-local
    # max-pools).
    config = helpers.tiny_config("nl3d", **{"model.dropout": 0.0})
    shape = (2, 2, config.input.height, config.input.width, 3)
    rng = np.random.default_rng(0)
    clips = rng.normal(size=shape).astype(np.float32)
    nudged = (clips * (1 + 1e-7 * rng.normal(size=shape))).astype(np.float32)

    def loss_and_grads(fast):
        model_config = config.model.copy_and_resolve_references()
        model_config.fast_cpu_ops = fast
        model = models.build_model(model_config, num_classes=5)
        variables = model.init(jax.random.key(0), clips, train=False)

        def loss(params, clips):
            (feats, logits), _ = model.apply(
                {**variables, "params": params}, clips, train=True, mutable=["batch_stats"]
            )
            return jnp.sum(feats**2) + jnp.sum(logits * jnp.arange(5.0))

        return functools.partial(jax.jit(jax.value_and_grad(loss)), variables["params"])

    loss_fast, grads_fast = loss_and_grads("true")(clips)
    xla = loss_and_grads("false")
    (loss_xla, grads_xla), (_, grads_nudged) = xla(clips), xla(nudged)
    np.testing.assert_allclose(loss_fast, loss_xla, rtol=1e-5)
    leaves = (jax.tree.leaves(grads) for grads in (grads_xla, grads_nudged))
    paths_and_fast = jax.tree_util.tree_leaves_with_path(grads_fast)
    for (path, g_fast), g_xla, g_nudged in zip(paths_and_fast, *leaves, strict=True):
        # The rewrites sum in another order, so they differ by float rounding, which train-mode BN
        # over this tiny batch amplifies: nudging the clips by 1e-7 of their values moves some
        # gradients by 1e-3 of the leaf's largest entry. So the tolerance is ten times what the
        # nudge moved, plus 1e-4 of the largest entry and a floor for leaves that are zero but for
        # rounding (the non-local blocks' output BN). A wrong tap or transpose moves them by O(1).
        rounding = float(jnp.max(jnp.abs(g_xla - g_nudged)))
        atol = 10 * rounding + 1e-4 * float(jnp.max(jnp.abs(g_xla))) + 1e-6
        np.testing.assert_allclose(g_fast, g_xla, rtol=0, atol=atol, err_msg=str(path))
