"""GLTR (Li et al., ICCV 2019): per-frame 2D ResNet, dilated temporal pyramid, temporal attention.

Follows the official code (`ljn114514/GLTR`: `resnet.py`, `NonLocalBlock1D.py`): frame feature =
average-pooled ResNet-50 map -> Dense 2048 -> 128; DTP = identity branch + one kernel-3 temporal
conv per dilation (padding = dilation, so the length is kept); TSA = a 1D non-local block 512 -> 256
-> 512 with a zero-gamma BN; feature = mean over time. Everything after the frame encoder runs in
float32.

Padding. A tracklet padded at the end to a bucket length with `mask` gives exactly the features of
the unpadded tracklet in eval mode: padded frame features are zeroed before the DTP (which is what
the DTP's own zero padding feeds the unpadded tracklet), padded frames are masked out of the TSA's
keys and BN statistics and out of the temporal mean. The valid frames must be one contiguous run.
In train mode the frame encoder's BN statistics would still include padded frames; training uses
fixed-length clips and no mask.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax.numpy as jnp
from flax import linen as nn

from vreid_jax.models import heads, layers, non_local, resnet


class DilatedTemporalPyramid(nn.Module):
    """`[B, T, D]` -> `[B, T, D * (1 + len(dilations))]`: input concatenated with dilated convs."""

    dilations: Sequence[int] = (1, 2, 3)

    @nn.compact
    def __call__(self, x):
        features = x.shape[-1]
        branches = [x]
        for rate in self.dilations:
            branches.append(
                nn.Conv(
                    features,
                    (3,),
                    kernel_dilation=(rate,),
                    padding=((rate, rate),),
                    use_bias=False,
                    kernel_init=nn.initializers.normal(stddev=0.001),  # the official init
                    name=f"dilated_conv_{rate}",
                )(x)
            )
        return jnp.concatenate(branches, axis=-1)


class GLTR(nn.Module):
    """Clip `[B, T, H, W, 3]` -> (feature `[B, frame_dim * (1 + len(dilations))]`, logits).

    `encode_frames` and `temporal_head` are the two halves, callable on their own through
    `module.apply(..., method=...)`: evaluation encodes fixed-size frame batches, then runs the head
    on whole padded tracklets.
    """

    backbone: resnet.ResNet
    num_classes: int
    frame_dim: int = 128
    dilations: Sequence[int] = (1, 2, 3)
    dropout: float = 0.5

    def setup(self):
        self.frame_proj = nn.Dense(
            self.frame_dim, kernel_init=layers.kaiming_fan_out, bias_init=nn.initializers.zeros
        )
        self.dtp = DilatedTemporalPyramid(tuple(self.dilations))
        # The official NonLocalBlock1D keeps PyTorch's default Conv1d init for theta, phi, g, W.
        self.tsa = non_local.NonLocalBlock(torch_default_init=True)
        self.head = heads.ClassifierHead(self.num_classes, self.dropout)

    def encode_frames(self, frames, train: bool = False):
        """`[..., H, W, 3]` frames -> `[..., frame_dim]` float32 (any leading axes)."""
        x = self.backbone(frames, train)
        x = jnp.mean(x.astype(jnp.float32), axis=(-3, -2))
        return self.frame_proj(x)

    def temporal_head(self, frame_features, mask=None, train: bool = False):
        """`[B, T, frame_dim]` and optional `[B, T]` bool (True = real frame) -> `[B, D]` float32."""
        x = frame_features.astype(jnp.float32)
        if mask is not None:
            weights = mask.astype(jnp.float32)[..., None]
            x = x * weights
        x = self.tsa(self.dtp(x), train, mask=mask)
        if mask is None:
            return jnp.mean(x, axis=1)
        return jnp.sum(x * weights, axis=1) / jnp.maximum(jnp.sum(weights, axis=1), 1.0)

    def __call__(self, clips, train: bool, mask=None):
        features = self.temporal_head(self.encode_frames(clips, train), mask, train)
        return features, self.head(features, train)
