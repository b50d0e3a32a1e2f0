"""OpenAI CLIP's ViT image encoder, as TF-CLIP uses it: every token out, camera embedding in.

The architecture is OpenAI's (`openai/CLIP`, `clip/model.py`, `VisionTransformer`): a patch
embedding (conv, kernel = stride = patch size, no bias), a class token, learned positional
embeddings, `ln_pre`, `layers` pre-LN residual blocks (multi-head self-attention with one fused
q/k/v input projection and an output projection; an MLP width -> 4 width -> width with QuickGELU,
x * sigmoid(1.702 x)), `ln_post` and a width -> output_dim projection without bias. Every
LayerNorm has epsilon 1e-5 and computes in float32.

TF-CLIP's changes (`AsuradaYuci/TF-CLIP`, `model/clip/model.py`, `VisionTransformer.forward`,
lines 218-240): `ln_post` and the projection apply to every token, not only the class token, and
both the normalised tokens and their projections are returned; an optional camera embedding is
added to the class token only (lines 223-224: `x[:,0] = x[:,0] + cv_emb`, just before the
positional embedding at line 225). The embedding is `sie_coe * cv_embed[camera]` with one
`width`-vector per camera (`model/make_model_clipreid.py`, lines 173-180 and 240-243; `SIE_COE`
is 1.0 in `configs/vit_clipreid.yml`, line 13, over the 3.0 default of `config/defaults.py`,
line 48): `CameraEmbedding` below.

Positional embeddings. The module's table has `1 + gh * gw` rows for the grid of its input
(`patch_grid`), so its shape follows the input size at `init`. Pretrained tables (14x14 for
ViT-B/16 at 224x224) are resized once, when the weights are loaded, as TF-CLIP's `build_model`
does (`model/clip/model.py`, lines 436 and 451-467: torch `F.interpolate(mode='bilinear')`,
`align_corners=False`, no antialiasing): `resize_positional_embedding`, which equals torch's
operation. (`jax.image.resize` antialiases when it shrinks a grid, a different operation.)
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from vreid_jax.models import layers

LAYER_NORM_EPSILON = 1e-5
# QuickGELU's constant: x * sigmoid(1.702 x), OpenAI's approximation of GELU.
QUICK_GELU_ALPHA = 1.702


class ClipTokens(NamedTuple):
    """Every token of the encoder's output: the class token first, then the patches row by row.

    Attributes:
      tokens: `[B, 1 + gh * gw, width]`, after `ln_post` (TF-CLIP's `image_features`).
      projected: `[B, 1 + gh * gw, output_dim]`, `tokens @ proj` (TF-CLIP's `image_features_proj`).
    """

    tokens: jax.Array
    projected: jax.Array


def patch_grid(height: int, width: int, patch_size: int) -> tuple[int, int]:
    """The token grid of a `height x width` image: a patch conv without padding drops any remainder
    (TF-CLIP's `(size - 16) // stride + 1` with stride = patch size)."""
    if height < patch_size or width < patch_size:
        raise ValueError(
            f"A {height}x{width} image is smaller than one {patch_size}x{patch_size} patch."
        )
    return height // patch_size, width // patch_size


def quick_gelu(x):
    return x * jax.nn.sigmoid(QUICK_GELU_ALPHA * x)


def layer_norm(x, name: str):
    """LayerNorm (epsilon 1e-5) computed in float32 whatever the compute dtype, as OpenAI's
    subclass does, and cast back; params `scale` and `bias` (torch's `weight` and `bias`). Called
    inside a compact method, whose submodule it becomes."""
    y = nn.LayerNorm(
        epsilon=LAYER_NORM_EPSILON, dtype=jnp.float32, use_fast_variance=False, name=name
    )(x.astype(jnp.float32))
    return y.astype(x.dtype)


class SelfAttention(nn.Module):
    """torch's `nn.MultiheadAttention` as CLIP uses it: one fused q/k/v projection (`in_proj`,
    q, k, v stacked in that order along its outputs), scaled dot-product attention over `heads`
    heads, `out_proj`. Both projections have biases. Initialised as torch initialises it."""

    width: int
    heads: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        batch, length, _ = x.shape
        head_dim = self.width // self.heads
        qkv = nn.Dense(
            3 * self.width,
            dtype=self.dtype,
            kernel_init=nn.initializers.xavier_uniform(),  # torch's init of in_proj_weight
            name="in_proj",
        )(x)
        q, k, v = (
            t.reshape(batch, length, self.heads, head_dim) for t in jnp.split(qkv, 3, axis=-1)
        )
        out = jax.nn.dot_product_attention(q, k, v, scale=head_dim**-0.5)
        return nn.Dense(
            self.width,
            dtype=self.dtype,
            kernel_init=layers.torch_default_kernel,
            bias_init=nn.initializers.zeros,  # torch's MHA zeroes both projections' biases
            name="out_proj",
        )(out.reshape(batch, length, self.width))


class ResidualAttentionBlock(nn.Module):
    """Pre-LN transformer block: x + attn(ln_1(x)), then x + mlp(ln_2(x))."""

    width: int
    heads: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        return residual_attention(x, self.width, self.heads, self.dtype)


def residual_attention(x, width: int, heads: int, dtype):
    """`ResidualAttentionBlock`'s computation. Called inside a compact method, its layers (`attn`,
    `ln_1`, `ln_2`, `c_fc`, `c_proj`) become the caller's submodules (TF-CLIP's TMD block has
    them under its own name)."""
    x = x + SelfAttention(width, heads, dtype, name="attn")(layer_norm(x, "ln_1"))
    y = _torch_linear(4 * width, width, dtype, "c_fc")(layer_norm(x, "ln_2"))
    y = _torch_linear(width, 4 * width, dtype, "c_proj")(quick_gelu(y))
    return x + y


def _torch_linear(features: int, fan_in: int, dtype, name: str) -> nn.Dense:
    """A Dense layer with torch's default Linear init (as OpenAI's ViT starts from, but the
    embeddings and projection)."""
    return nn.Dense(
        features,
        dtype=dtype,
        kernel_init=layers.torch_default_kernel,
        bias_init=layers.torch_default_bias(fan_in),
        name=name,
    )


class ClipVisionTransformer(nn.Module):
    """Images `[B, H, W, 3]` (normalised floats) -> `ClipTokens` (every token, float32).

    Attributes:
      width, layers, heads, patch_size, output_dim: ViT-B/16 is 768, 12, 12, 16, 512.
      dtype: the compute dtype (parameters and LayerNorms stay float32).

    `camera_embedding` (`[B, width]`, optional) is added to the class token (TF-CLIP's SIE).
    """

    width: int = 768
    layers: int = 12
    heads: int = 12
    patch_size: int = 16
    output_dim: int = 512
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, images, camera_embedding=None):
        if self.width % self.heads:
            raise ValueError(f"width {self.width} is not a multiple of heads {self.heads}.")
        batch, height, width, channels = images.shape
        p = self.patch_size
        gh, gw = patch_grid(height, width, p)
        scale = self.width**-0.5  # OpenAI's init of the embeddings and the projection

        # The patch conv (kernel = stride = p, no padding) as one matmul over the flattened
        # patches: the same sums as the conv, and a plain matmul's gradient on every platform.
        kernel = self.param("conv1", layers.torch_default_kernel, (p, p, channels, self.width))
        patches = images[:, : gh * p, : gw * p].reshape(batch, gh, p, gw, p, channels)
        patches = patches.transpose(0, 1, 3, 2, 4, 5).reshape(batch, gh * gw, p * p * channels)
        x = jnp.dot(patches.astype(self.dtype), kernel.reshape(-1, self.width).astype(self.dtype))

        class_embedding = self.param(
            "class_embedding", nn.initializers.normal(scale), (self.width,)
        )
        cls = jnp.broadcast_to(class_embedding, (batch, 1, self.width)).astype(x.dtype)
        if camera_embedding is not None:
            cls = cls + camera_embedding[:, None, :].astype(x.dtype)
        x = jnp.concatenate([cls, x], axis=1)
        positional = self.param(
            "positional_embedding", nn.initializers.normal(scale), (1 + gh * gw, self.width)
        )
        x = layer_norm(x + positional.astype(x.dtype), "ln_pre")

        for i in range(self.layers):
            block = ResidualAttentionBlock(
                self.width, self.heads, self.dtype, name=f"resblocks_{i}"
            )
            x = residual_gradient_once(block(x))

        tokens = layer_norm(x, "ln_post")
        proj = self.param("proj", nn.initializers.normal(scale), (self.width, self.output_dim))
        projected = jnp.dot(tokens, proj.astype(tokens.dtype))
        return ClipTokens(tokens.astype(jnp.float32), projected.astype(jnp.float32))


@jax.custom_vjp
def residual_gradient_once(x):
    """The identity, whose gradient is computed once here (`optimization_barrier` on the
    cotangent) rather than recomputed inside its consumers. Without it XLA:CPU fuses the residual
    stream's whole gradient chain, from the last block down, into each LayerNorm's weight-gradient
    operand: work quadratic in depth, a ViT-B/16 train step about 1.3x slower
    (`benchmarks/README.md`, "TF-CLIP against the official PyTorch code"). Same values."""
    return x


residual_gradient_once.defvjp(lambda x: (x, None), lambda _, g: (jax.lax.optimization_barrier(g),))


class CameraEmbedding(nn.Module):
    """TF-CLIP's SIE: `scale * table[cameras]`, one `width`-vector per camera (`cv_embed`).

    `scale` is `sie_coe` (TF-CLIP's recipe: 1.0). The table starts as timm's
    `trunc_normal_(std=.02)`, whose bounds are +-2 absolute, i.e. a plain normal at this std.

    `cameras=None`, inputs from cameras the model never saw (your own videos), gives
    `scale * mean(table)` (`[width]`). TF-CLIP defines nothing for them (its test cameras are its
    training cameras); every training input carried one of the table's rows, so the mean row
    keeps the class token near where training put it, where no embedding at all would move it by
    a whole row's norm, farther than the training cameras' rows are from their mean.
    """

    num_cameras: int
    width: int = 768
    scale: float = 1.0

    @nn.compact
    def __call__(self, cameras):
        table = self.param("cv_embed", nn.initializers.normal(0.02), (self.num_cameras, self.width))
        if cameras is None:
            return self.scale * jnp.mean(table, axis=0)
        return self.scale * table[cameras]


# ------------------------------------------------------------------------ position embedding resize


def _bilinear_taps(size_in: int, size_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per output index: the two input indices and the weight of the second, by torch's rule for
    `align_corners=False` (`aten/src/ATen/native/UpSample.h`, `area_pixel_compute_source_index`:
    half-pixel centres, the source clamped at 0, the upper neighbour at the last row).

    The ratio is a float32 division and the source index `ratio * (i + 0.5) - 0.5` is rounded to
    float32 once, which reproduces the weights of torch's CPU kernel bit for bit (rounding the
    product first moves some weights by an ulp, and the result by up to 4e-6 on values near 10).
    """
    ratio = np.float64(np.float32(size_in) / np.float32(size_out))
    source = ((np.arange(size_out) + 0.5) * ratio - 0.5).astype(np.float32)
    source = np.maximum(source, np.float32(0.0))
    lower = np.minimum(source.astype(np.int64), size_in - 1)
    upper = np.minimum(lower + 1, size_in - 1)
    return lower, upper, (source - lower).astype(np.float32)


def bilinear_resize(grid: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """`[h, w, D]` -> `[size[0], size[1], D]` float32, equal to torch's `F.interpolate(
    mode='bilinear', align_corners=False)` (no antialiasing) on the same grid in `[1, D, h, w]`
    layout: the same taps and weights, the sums in float64 rounded once (torch's float32 sums
    differ from that by at most an ulp)."""
    grid = np.asarray(grid, np.float32).astype(np.float64)
    rows0, rows1, wy1 = _bilinear_taps(grid.shape[0], size[0])
    cols0, cols1, wx1 = _bilinear_taps(grid.shape[1], size[1])
    wy0, wx0 = np.float32(1) - wy1, np.float32(1) - wx1
    wy0, wy1 = wy0[:, None, None].astype(np.float64), wy1[:, None, None].astype(np.float64)
    wx0, wx1 = wx0[None, :, None].astype(np.float64), wx1[None, :, None].astype(np.float64)
    top = grid[rows0][:, cols0] * wx0 + grid[rows0][:, cols1] * wx1
    bottom = grid[rows1][:, cols0] * wx0 + grid[rows1][:, cols1] * wx1
    return (top * wy0 + bottom * wy1).astype(np.float32)


def resize_positional_embedding(
    positional: np.ndarray, grid: tuple[int, int], new_grid: tuple[int, int]
) -> np.ndarray:
    """`[1 + h * w, D]` for token grid `grid` -> `[1 + h' * w', D]` for `new_grid`: the class row
    kept, the grid resized bilinearly (`bilinear_resize`), as TF-CLIP's `resize_pos_embed`."""
    positional = np.asarray(positional, np.float32)
    if positional.shape[0] != 1 + grid[0] * grid[1]:
        raise ValueError(
            f"A positional embedding of {positional.shape[0]} rows is not a class row and a "
            f"{grid[0]}x{grid[1]} grid."
        )
    if tuple(grid) == tuple(new_grid):
        return positional
    patches = positional[1:].reshape(grid[0], grid[1], -1)
    resized = bilinear_resize(patches, new_grid).reshape(new_grid[0] * new_grid[1], -1)
    return np.concatenate([positional[:1], resized], axis=0)
