"""torchvision's ResNets (basic or bottleneck blocks), weight-compatible; optionally (2+1)D + non-local.

One backbone serves three models. Frames `[N, H, W, 3]` give torchvision's 2D ResNet (GLTR's
encoder). Clips `[B, T, H, W, 3]` run the same 2D kernels on every frame (flax convs treat leading
axes as batch axes); with `temporal_blocks` a `t x 1 x 1` conv follows the 3x3 conv of those blocks
and with `nonlocal_blocks` non-local blocks follow those blocks: that is NL3D's backbone. The
parameter names of the 2D part are the same in all three, so ImageNet weights load by name.

Ported torchvision conventions: ResNet-18/34 use basic blocks (two 3x3 convs), ResNet-50/101/152
bottlenecks with the stride on the 3x3 conv ("v1.5"); a block projects its shortcut (1x1 conv + BN,
torchvision's `downsample`) exactly when its stride or channel count changes; explicit symmetric
padding for the 7x7 stem, the 3x3 convs and the stem max-pool (which pads with -inf, as PyTorch),
BN momentum 0.1 (torch) = 0.9 (flax), epsilon 1e-5.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax.numpy as jnp
from flax import linen as nn

from vreid_jax.models import layers, non_local, temporal

# Output channels of a block = this x its inner width. The depths and their layouts are
# `registry.STAGE_SIZES`.
EXPANSION = {"basic": 1, "bottleneck": 4}


class _Block(nn.Module):
    """What both block types share: the strided 3x3 conv (+ temporal conv) and the shortcut.

    `temporal_kernel` > 0 follows the block's strided 3x3 conv with a `t x 1 x 1` conv; nothing
    nonlinear sits between the two, so the pair is exactly the inflated 3D conv at 'inflate' init
    and the next BN normalises their joint output.
    """

    width: int
    strides: int = 1
    temporal_kernel: int = 0  # 0: no temporal conv.
    temporal_padding: str = "zeros"
    temporal_init: str = "inflate"
    dtype: jnp.dtype = jnp.float32
    ops: layers.Ops = layers.Ops()

    def norm(self, train: bool, name: str) -> layers.BatchNorm:
        return layers.batch_norm(train, self.dtype, name)

    def spatial_conv(self, x, name: str):
        """The block's strided 3x3 conv `name`, then its temporal conv `{name}_temporal` if any."""
        y = self.ops.conv(
            self.width,
            (3, 3),
            strides=self.strides,
            padding=layers.symmetric_padding(3),
            dtype=self.dtype,
            name=name,
        )(x)
        if not self.temporal_kernel:
            return y
        return temporal.temporal_conv(
            y,
            kernel_size=self.temporal_kernel,
            padding=self.temporal_padding,
            init=self.temporal_init,
            dtype=self.dtype,
            ops=self.ops,
            name=f"{name}_temporal",
        )

    def add_shortcut(self, x, y, train: bool):
        """relu(shortcut(x) + y); torchvision projects exactly when the stride or channels change."""
        if self.strides != 1 or x.shape[-1] != y.shape[-1]:
            x = self.ops.conv(
                y.shape[-1], (1, 1), strides=self.strides, dtype=self.dtype, name="downsample_conv"
            )(x)
            x = self.norm(train, "downsample_bn")(x)
        return nn.relu(x + y)


class BasicBlock(_Block):
    """ResNet-18/34: 3x3 (stride) [-> t x 1 x 1] -> 3x3, BN after each, shortcut."""

    @nn.compact
    def __call__(self, x, train: bool):
        y = nn.relu(self.norm(train, "bn1")(self.spatial_conv(x, "conv1")))
        y = self.ops.conv(
            self.width, (3, 3), padding=layers.symmetric_padding(3), dtype=self.dtype, name="conv2"
        )(y)
        return self.add_shortcut(x, self.norm(train, "bn2")(y), train)


class Bottleneck(_Block):
    """ResNet-50/101/152: 1x1 -> 3x3 (stride) [-> t x 1 x 1] -> 1x1, BN after each, shortcut."""

    @nn.compact
    def __call__(self, x, train: bool):
        y = self.ops.conv(self.width, (1, 1), dtype=self.dtype, name="conv1")(x)
        y = nn.relu(self.norm(train, "bn1")(y))
        y = nn.relu(self.norm(train, "bn2")(self.spatial_conv(y, "conv2")))
        y = self.ops.conv(
            self.width * EXPANSION["bottleneck"], (1, 1), dtype=self.dtype, name="conv3"
        )(y)
        return self.add_shortcut(x, self.norm(train, "bn3")(y), train)


_BLOCK_MODULES = {"basic": BasicBlock, "bottleneck": Bottleneck}


class ResNet(nn.Module):
    """The convolutional trunk (stem, res2..res5), returning the last feature map.

    Attributes:
      stage_sizes: blocks per stage res2..res5.
      block: 'basic' (ResNet-18/34) or 'bottleneck' (ResNet-50/101/152).
      width: channels of the stem and inner width of res2 (64 in torchvision); stage i uses
        width * 2**i.
      last_stride: stride of res5 (2 in torchvision, 1 keeps a 16x8 map at 256x128).
      temporal_blocks: per stage, the 0-based blocks whose strided 3x3 conv gets a temporal conv;
        needs clip input `[B, T, H, W, 3]`.
      temporal_kernel, temporal_padding, temporal_init: see `temporal.temporal_conv`.
      nonlocal_blocks: per stage, the 0-based blocks followed by a non-local block (clip input).
      nonlocal_scale: see `non_local.NonLocalBlock.scale`.
      dtype: compute dtype; parameters stay float32.
      ops: how convs and max-pools are computed (`layers.Ops`).
    """

    stage_sizes: Sequence[int]
    block: str = "bottleneck"
    width: int = 64
    last_stride: int = 2
    temporal_blocks: Sequence[Sequence[int]] = ((), (), (), ())
    temporal_kernel: int = 3
    temporal_padding: str = "zeros"
    temporal_init: str = "inflate"
    nonlocal_blocks: Sequence[Sequence[int]] = ((), (), (), ())
    nonlocal_scale: bool = False
    dtype: jnp.dtype = jnp.float32
    ops: layers.Ops = layers.Ops()

    @property
    def out_features(self) -> int:
        return self.width * 2 ** (len(self.stage_sizes) - 1) * EXPANSION[self.block]

    @nn.compact
    def __call__(self, x, train: bool):
        """`x`: `[..., H, W, 3]` (frames or clips). Returns `[..., H/16 or H/32, W/.., C]`."""
        x = x.astype(self.dtype)
        x = self.ops.conv(
            self.width,
            (7, 7),
            strides=2,
            padding=layers.symmetric_padding(7),
            dtype=self.dtype,
            name="conv1",
        )(x)
        x = nn.relu(layers.batch_norm(train, self.dtype, "bn1")(x))
        x = self.ops.max_pool_3x3_s2(x)
        last = len(self.stage_sizes) - 1
        for i, num_blocks in enumerate(self.stage_sizes):
            for j in range(num_blocks):
                strides = 1 if i == 0 or j > 0 else (self.last_stride if i == last else 2)
                x = _BLOCK_MODULES[self.block](
                    self.width * 2**i,
                    strides=strides,
                    temporal_kernel=self.temporal_kernel if j in self.temporal_blocks[i] else 0,
                    temporal_padding=self.temporal_padding,
                    temporal_init=self.temporal_init,
                    dtype=self.dtype,
                    ops=self.ops,
                    name=f"layer{i + 1}_{j}",
                )(x, train)
                if j in self.nonlocal_blocks[i]:
                    x = non_local.NonLocalBlock(
                        pool_window=(1, 2, 2),
                        scale=self.nonlocal_scale,
                        dtype=self.dtype,
                        ops=self.ops,
                        name=f"layer{i + 1}_{j}_nonlocal",
                    )(x, train)
        return x


class ResNetClassifier(nn.Module):
    """torchvision's `resnet*()`: trunk, global average pool, `fc`; logits in float32."""

    backbone: ResNet
    num_classes: int = 1000

    @nn.compact
    def __call__(self, images, train: bool = False):
        x = self.backbone(images, train)
        x = jnp.mean(x.astype(jnp.float32), axis=(-3, -2))
        fan_in = x.shape[-1]
        return nn.Dense(
            self.num_classes,
            kernel_init=layers.torch_default_kernel,
            bias_init=layers.torch_default_bias(fan_in),
            name="fc",
        )(x)
