"""The CLIP ViT encoder's own properties, and the positional-embedding resize against torch's
`F.interpolate` (the parity of whole encoders through the converter: test_convert_clip.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from vreid_jax.models import clip_vit

TINY = dict(width=64, layers=2, heads=4, patch_size=16, output_dim=32)


def _torch_interpolate(grid, size):
    torch = pytest.importorskip("torch")
    nchw = torch.from_numpy(grid).permute(2, 0, 1)[None]
    out = torch.nn.functional.interpolate(nchw, size=size, mode="bilinear", align_corners=False)
    return out[0].permute(1, 2, 0).numpy()


@pytest.mark.parametrize(
    "grid, size",
    [
        ((14, 14), (16, 8)),  # ViT-B/16's grid to 256x128 inputs: up in height, down in width
        ((14, 14), (28, 30)),  # up
        ((14, 14), (7, 5)),  # down
        ((14, 14), (4, 2)),  # 64x32 inputs (the tests' size)
        ((3, 5), (11, 2)),  # non-square source
        ((14, 14), (14, 14)),  # unchanged
    ],
)
def test_bilinear_resize_equals_torch_interpolate(grid, size):
    values = np.random.default_rng(0).normal(size=(*grid, 24)).astype(np.float32)
    ours = clip_vit.bilinear_resize(values, size)
    assert ours.shape == (*size, 24) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, _torch_interpolate(values, size), rtol=0, atol=1e-6)


def test_jax_image_resize_is_another_operation_when_it_shrinks():
    """Why the resize is written out: `jax.image.resize` antialiases on downscale."""
    values = np.random.default_rng(1).normal(size=(14, 14, 8)).astype(np.float32)
    torch_result = _torch_interpolate(values, (16, 8))
    jax_result = np.asarray(jax.image.resize(values, (16, 8, 8), "bilinear"))
    assert np.abs(jax_result - torch_result).max() > 1e-2
    np.testing.assert_allclose(
        clip_vit.bilinear_resize(values, (16, 8)), torch_result, rtol=0, atol=1e-6
    )


def test_resize_positional_embedding_is_tfclips_resize_pos_embed():
    torch = pytest.importorskip("torch")
    from torch_clip import resize_pos_embed  # noqa: PLC0415  (torch)

    positional = np.random.default_rng(2).normal(size=(1 + 14 * 14, 64)).astype(np.float32)
    ours = clip_vit.resize_positional_embedding(positional, (14, 14), (16, 8))
    theirs = resize_pos_embed(torch.from_numpy(positional), 16, 8).numpy()
    assert ours.shape == (1 + 16 * 8, 64)
    np.testing.assert_array_equal(ours[0], positional[0])  # the class row is kept
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="not a class row and a 14x13 grid"):
        clip_vit.resize_positional_embedding(positional, (14, 13), (16, 8))


def test_encoder_returns_every_token_and_the_positional_table_follows_the_input():
    module = clip_vit.ClipVisionTransformer(**TINY)
    images = jnp.zeros((2, 64, 40, 3))  # 40 is no multiple of 16: the remainder is dropped
    variables = jax.eval_shape(module.init, jax.random.key(0), images)
    params = variables["params"]
    assert params["positional_embedding"].shape == (1 + 4 * 2, 64)
    assert params["conv1"].shape == (16, 16, 3, 64)
    assert params["resblocks_1"]["attn"]["in_proj"]["kernel"].shape == (64, 3 * 64)
    assert params["proj"].shape == (64, 32)
    assert "resblocks_2" not in params
    out = jax.eval_shape(module.apply, variables, images)
    assert out.tokens.shape == (2, 9, 64) and out.projected.shape == (2, 9, 32)
    assert out.tokens.dtype == out.projected.dtype == jnp.float32


def test_camera_embedding_is_added_to_the_class_token_only():
    # Without blocks every token is normalised on its own, so only the class token may change.
    module = clip_vit.ClipVisionTransformer(**{**TINY, "layers": 0})
    images = jax.random.normal(jax.random.key(1), (2, 32, 32, 3))
    variables = module.init(jax.random.key(0), images)
    camera = jax.random.normal(jax.random.key(2), (2, 64))
    plain = module.apply(variables, images)
    with_camera = module.apply(variables, images, camera)
    np.testing.assert_array_equal(with_camera.tokens[:, 1:], plain.tokens[:, 1:])
    assert np.abs(with_camera.tokens[:, 0] - plain.tokens[:, 0]).min() > 0
    # ... and the class token is that of a class embedding shifted by the camera's vector.
    shifted = jax.tree.map(lambda x: x, variables)
    shifted["params"]["class_embedding"] = variables["params"]["class_embedding"] + camera[0]
    np.testing.assert_allclose(
        module.apply(shifted, images[:1]).tokens[0, 0], with_camera.tokens[0, 0], atol=1e-6
    )


def test_camera_embedding_table_is_scaled_lookup():
    table = clip_vit.CameraEmbedding(num_cameras=6, width=64, scale=3.0)
    variables = table.init(jax.random.key(0), jnp.zeros((1,), jnp.int32))
    cameras = jnp.array([5, 0, 5])
    out = table.apply(variables, cameras)
    np.testing.assert_allclose(out, 3.0 * variables["params"]["cv_embed"][cameras], rtol=1e-6)
    # Cameras the model never saw (None): the scaled mean of the table.
    unknown = table.apply(variables, None)
    np.testing.assert_allclose(unknown, 3.0 * variables["params"]["cv_embed"].mean(0), rtol=1e-6)


def test_patch_embedding_is_the_strided_conv():
    module = clip_vit.ClipVisionTransformer(**{**TINY, "layers": 0})
    images = jax.random.normal(jax.random.key(3), (1, 48, 32, 3))
    variables = module.init(jax.random.key(0), images)
    conv = jax.lax.conv_general_dilated(
        images,
        variables["params"]["conv1"],
        window_strides=(16, 16),
        padding="VALID",
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
    ).reshape(1, 6, 64)
    seen = {}

    def grab_ln_pre_input(next_fun, args, kwargs, context):
        if context.module.name == "ln_pre":
            seen["embedded"] = args[0]
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(grab_ln_pre_input):
        module.apply(variables, images)
    # Row-major patches after the class token, positions added.
    patches = seen["embedded"][0, 1:] - variables["params"]["positional_embedding"][1:]
    np.testing.assert_allclose(patches, conv[0], atol=1e-5)


def test_bfloat16_compute_stays_close_to_float32():
    images = jax.random.normal(jax.random.key(4), (1, 32, 32, 3))
    full = clip_vit.ClipVisionTransformer(**TINY)
    variables = full.init(jax.random.key(0), images)
    half = clip_vit.ClipVisionTransformer(**TINY, dtype=jnp.bfloat16)
    a, b = full.apply(variables, images), half.apply(variables, images)
    assert b.tokens.dtype == jnp.float32
    np.testing.assert_allclose(b.tokens, a.tokens, atol=0.1)
