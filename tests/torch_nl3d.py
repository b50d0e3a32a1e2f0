"""Our NL3D in plain torch, for parity checks and as the PyTorch side of the benchmarks.

The same network as `vreid_jax.models.nl3d.NL3D` built by `registry.build_model`: the (2+1)D
ResNet (torchvision's bottleneck v1.5 trunk, `last_stride` on res5; in the blocks listed in
`temporal_blocks` a bias-free `t x 1 x 1` conv right after the strided 3x3 conv, zero or edge
padding over time), non-local blocks after the blocks listed in `nonlocal_blocks` (embedded
Gaussian, theta/phi/g/out 1x1 convs with bias, phi and g max-pooled 1 x 2 x 2, optional 1/sqrt(d),
output BN, residual), global average pool over T, H, W, then the bottleneck head (Linear 512, BN1d
= the retrieval feature, LeakyReLU 0.1, Dropout, Linear classifier).

Layout: frames `[B * T, 3, H, W]` (tracklet-major), as a PyTorch re-ID code base feeds a 2D trunk;
activations stay `[B * T, C, H, W]`, so the spatial convs, BNs and pools are plain 2D ops (a BN over
B*T*H*W is BatchNorm3d's statistics); the temporal conv runs as a `(t, 1)` Conv2d on the
`[B, C, T, H * W]` view and the non-local block attends over all T*H*W positions of a tracklet.
The clip length T is fixed at construction.

`flat_flax_arrays` / `to_flax_variables` map every tensor one-to-one onto our flax variables and
raise on anything unused, missing or misshapen. Needs the optional `torch` extra.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
import torch_mapping
from torch import nn

from vreid_jax.models import pretrained


class TemporalConv(nn.Module):
    """Bias-free `t x 1 x 1` conv over `[B * T, C, H, W]`, length preserving."""

    def __init__(self, channels: int, kernel: int, clip_len: int, padding: str):
        super().__init__()
        if padding not in ("zeros", "edge"):
            raise ValueError(f"temporal padding {padding!r}")
        self.clip_len, self.half, self.edge = clip_len, kernel // 2, padding == "edge"
        pad = 0 if self.edge else self.half
        self.conv = nn.Conv2d(channels, channels, (kernel, 1), padding=(pad, 0), bias=False)

    def forward(self, x):
        n, c, h, w = x.shape
        y = x.view(n // self.clip_len, self.clip_len, c, h * w).transpose(1, 2)  # [B, C, T, HW]
        if self.edge:
            y = F.pad(y, (0, 0, self.half, self.half), mode="replicate")
        y = self.conv(y)
        return y.transpose(1, 2).reshape(n, c, h, w)


class Bottleneck(nn.Module):
    """torchvision's bottleneck (stride on the 3x3 conv), the temporal conv after that 3x3 conv."""

    def __init__(self, inplanes, planes, stride, temporal_kernel, clip_len, temporal_padding):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.conv2_temporal = (
            TemporalConv(planes, temporal_kernel, clip_len, temporal_padding)
            if temporal_kernel
            else None
        )
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.downsample = None
        if stride != 1 or inplanes != planes * 4:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, planes * 4, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * 4),
            )

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.conv2(y)
        if self.conv2_temporal is not None:
            y = self.conv2_temporal(y)
        y = F.relu(self.bn2(y))
        y = self.bn3(self.conv3(y))
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(y + shortcut)


class NonLocal(nn.Module):
    """Embedded-Gaussian non-local block over the T x H x W positions of each tracklet."""

    def __init__(self, channels: int, clip_len: int, scale: bool):
        super().__init__()
        inner = channels // 2
        self.clip_len, self.inner, self.scale = clip_len, inner, scale
        self.theta = nn.Conv2d(channels, inner, 1)
        self.phi = nn.Conv2d(channels, inner, 1)
        self.g = nn.Conv2d(channels, inner, 1)
        self.out_proj = nn.Conv2d(inner, channels, 1)
        self.out_bn = nn.BatchNorm2d(channels)
        nn.init.zeros_(self.out_bn.weight)

    def _positions(self, x):
        """`[B * T, inner, h, w]` -> `[B, T * h * w, inner]`."""
        n, c, h, w = x.shape
        return (
            x.view(n // self.clip_len, self.clip_len, c, h * w)
            .transpose(2, 3)
            .reshape(n // self.clip_len, -1, c)
        )

    def forward(self, x):
        n, _, h, w = x.shape
        theta = self._positions(self.theta(x))
        phi = self._positions(F.max_pool2d(self.phi(x), 2))
        g = self._positions(F.max_pool2d(self.g(x), 2))
        affinity = theta @ phi.transpose(1, 2)
        if self.scale:
            affinity = affinity / math.sqrt(self.inner)
        y = torch.softmax(affinity, dim=-1) @ g  # [B, T*h*w, inner]
        y = y.view(n // self.clip_len, self.clip_len, h * w, self.inner).transpose(2, 3)
        y = y.reshape(n, self.inner, h, w)
        return x + self.out_bn(self.out_proj(y))


class NL3D(nn.Module):
    """`[B * T, 3, H, W]` frames -> (feature `[B, bottleneck_dim]`, logits `[B, num_classes]`).

    `temporal_blocks`, `nonlocal_blocks`: per stage, the 0-based blocks with a temporal conv / a
    non-local block after them (already resolved, as `resnet.ResNet` holds them).
    """

    def __init__(
        self,
        num_classes: int,
        clip_len: int,
        stage_sizes=(3, 4, 6, 3),
        width: int = 64,
        last_stride: int = 1,
        temporal_blocks=((0, 1, 2), (0, 1, 2, 3), (0, 1, 2, 3, 4, 5), (0, 1, 2)),
        temporal_kernel: int = 3,
        temporal_padding: str = "zeros",
        nonlocal_blocks=((), (1, 3), (1, 3, 5), ()),
        nonlocal_scale: bool = False,
        bottleneck_dim: int = 512,
        dropout: float = 0.5,
    ):
        super().__init__()
        self.clip_len = clip_len
        self.conv1 = nn.Conv2d(3, width, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.nonlocal_blocks = nn.ModuleDict()
        self.order = []  # (stage attribute, block index, non-local key or None)
        inplanes = width
        for stage, blocks in enumerate(stage_sizes):
            planes = width * 2**stage
            layer = []
            for j in range(blocks):
                stride = 1 if stage == 0 or j > 0 else 2
                if stage == len(stage_sizes) - 1 and j == 0:
                    stride = last_stride
                kernel = temporal_kernel if j in temporal_blocks[stage] else 0
                layer.append(
                    Bottleneck(inplanes, planes, stride, kernel, clip_len, temporal_padding)
                )
                inplanes = planes * 4
                key = None
                if j in nonlocal_blocks[stage]:
                    key = f"layer{stage + 1}_{j}"
                    self.nonlocal_blocks[key] = NonLocal(inplanes, clip_len, nonlocal_scale)
                self.order.append((f"layer{stage + 1}", j, key))
            setattr(self, f"layer{stage + 1}", nn.Sequential(*layer))
        self.bottleneck = nn.Linear(inplanes, bottleneck_dim)
        self.bottleneck_bn = nn.BatchNorm1d(bottleneck_dim)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(bottleneck_dim, num_classes)

    def trunk(self, frames):
        """Frames -> the res5 map `[B * T, C, h, w]`."""
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(frames))), 3, stride=2, padding=1)
        for stage, j, key in self.order:
            x = getattr(self, stage)[j](x)
            if key is not None:
                x = self.nonlocal_blocks[key](x)
        return x

    def head(self, pooled):
        feature = self.bottleneck_bn(self.bottleneck(pooled))
        y = self.dropout(F.leaky_relu(feature, 0.1))
        return feature, self.classifier(y)

    def pool(self, x):
        """`[B * T, C, h, w]` -> `[B, C]`, the mean over T, h, w."""
        n, c = x.shape[:2]
        return x.view(n // self.clip_len, self.clip_len, c, -1).mean(dim=(1, 3))

    def forward(self, frames):
        return self.head(self.pool(self.trunk(frames)))


def like(module, clip_len: int) -> NL3D:
    """A torch NL3D of the same architecture as our flax `module` (an `nl3d.NL3D`)."""
    b = module.backbone
    if b.block != "bottleneck":
        raise ValueError("torch_nl3d has bottleneck blocks only (ResNet-50/101/152 layouts).")
    return NL3D(
        num_classes=module.num_classes,
        clip_len=clip_len,
        stage_sizes=tuple(b.stage_sizes),
        width=b.width,
        last_stride=b.last_stride,
        temporal_blocks=tuple(tuple(s) for s in b.temporal_blocks),
        temporal_kernel=b.temporal_kernel,
        temporal_padding=b.temporal_padding,
        nonlocal_blocks=tuple(tuple(s) for s in b.nonlocal_blocks),
        nonlocal_scale=b.nonlocal_scale,
        bottleneck_dim=module.bottleneck_dim,
        dropout=module.dropout,
    )


_BN_LEAVES = {
    "weight": ("params", "scale"),
    "bias": ("params", "bias"),
    "running_mean": ("batch_stats", "mean"),
    "running_var": ("batch_stats", "var"),
}


def _location(key: str, array: np.ndarray):
    """(flax key tuple, array in flax layout) for one state-dict entry of `NL3D`."""
    parts = key.split(".")
    if parts[0] == "nonlocal_blocks":  # nonlocal_blocks.layer2_1.theta.weight
        block, layer, leaf = parts[1:]
        path = ("backbone", f"{block}_nonlocal", layer)
        if layer == "out_bn":
            collection, flax_leaf = _BN_LEAVES[leaf]
            return (collection, *path, flax_leaf), array
        if leaf == "weight":  # 1x1 conv [out, in, 1, 1] -> Dense kernel [in, out]
            return ("params", *path, "kernel"), array[:, :, 0, 0].T
        return ("params", *path, "bias"), array
    if len(parts) == 5 and parts[2] == "conv2_temporal":  # layer1.0.conv2_temporal.conv.weight
        # Conv2d [out, in, t, 1] -> flax [t, 1, 1, in, out].
        kernel = array[:, :, :, 0].transpose(2, 1, 0)[:, None, None]
        return ("params", "backbone", f"{parts[0]}_{parts[1]}", "conv2_temporal", "kernel"), kernel
    if parts[0] in ("bottleneck", "classifier"):
        leaf = "kernel" if parts[1] == "weight" else "bias"
        return ("params", "head", parts[0], leaf), array.T if leaf == "kernel" else array
    if parts[0] == "bottleneck_bn":
        collection, leaf = _BN_LEAVES[parts[1]]
        return (collection, "head", "bottleneck_bn", leaf), array
    collection, path = pretrained.flax_location(key)  # The 2D trunk: torchvision's names.
    if array.ndim == 4:
        array = array.transpose(2, 3, 1, 0)  # (out, in, h, w) -> (h, w, in, out)
    return (collection, *path), array


def flat_flax_arrays(net: NL3D, target, tensors=None) -> dict:
    """`(collection, *path) -> float64 numpy` for every leaf of `target` (our variables tree).

    `tensors` replaces entries of `net.state_dict()` (e.g. by parameter gradients). Every tensor
    of `net` but `num_batches_tracked` is used exactly once and every leaf of `target` filled with
    its shape, or this raises.
    """
    state = {k: v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    state |= tensors or {}
    flat = {}
    for key, value in state.items():
        location, array = _location(key, value.detach().double().numpy())
        if location in flat:
            raise AssertionError(f"{key}: {location} filled twice")
        flat[location] = array
    return torch_mapping.check_one_to_one(flat, target)


def to_flax_variables(net: NL3D, target) -> dict:
    """`net`'s weights and BN running statistics as our NL3D's variables (float32)."""
    return torch_mapping.as_flax_variables(flat_flax_arrays(net, target))


def randomise(net: nn.Module, seed: int) -> nn.Module:
    """Random affine parameters and running statistics in every BN (the non-local blocks' zero
    initialised output BNs included), so that every mapped tensor shows in the outputs."""
    torch_mapping.randomise_batch_norms(net, torch.Generator().manual_seed(seed))
    return net
