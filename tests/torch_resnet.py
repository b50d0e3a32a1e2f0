"""torchvision's ResNet architecture in plain torch, with torchvision's module names.

torchvision has no CPU build for this environment's torch, so the reference network is written here
from the architecture definition: basic blocks (resnet18/34) or bottleneck v1.5 (stride on the 3x3
conv; resnet50/101/152), 7x7/2 stem, 3x3/2 max-pool with padding 1, a projection shortcut where the
stride or the channel count changes. Its `state_dict`
loads into `vreid_jax.models.pretrained.from_torchvision`; the parity tests use it, and so do the PyTorch
sides of `benchmarks/resnet_vs_torch.py` and `benchmarks/transfer.py`. Needs the optional `torch` extra.
"""

from __future__ import annotations

import torch
from torch import nn


class BasicBlock(nn.Module):
    """3x3 (stride) -> 3x3 with BN, projection shortcut when the stride or channels change."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU()
        self.downsample = _projection(inplanes, planes, stride)

    def forward(self, x):
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(y + shortcut)


def _projection(inplanes: int, outplanes: int, stride: int):
    if stride == 1 and inplanes == outplanes:
        return None
    return nn.Sequential(
        nn.Conv2d(inplanes, outplanes, 1, stride=stride, bias=False), nn.BatchNorm2d(outplanes)
    )


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (stride) -> 1x1 with BN, projection shortcut when the stride or channels change."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU()
        self.downsample = _projection(inplanes, planes * 4, stride)

    def forward(self, x):
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(y + shortcut)


class ResNet(nn.Module):
    """torchvision's `resnet50()` for `stage_sizes=(3, 4, 6, 3), width=64`; NCHW input.

    `block='basic'` with (2, 2, 2, 2) or (3, 4, 6, 3) is `resnet18()` or `resnet34()`;
    `last_stride=1` keeps layer4 at the resolution of layer3 (the re-ID trunks).
    """

    def __init__(
        self,
        stage_sizes=(3, 4, 6, 3),
        width: int = 64,
        num_classes: int = 1000,
        block: str = "bottleneck",
        last_stride: int = 2,
    ):
        super().__init__()
        block_class = {"basic": BasicBlock, "bottleneck": Bottleneck}[block]
        self.conv1 = nn.Conv2d(3, width, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        inplanes = width
        for stage, blocks in enumerate(stage_sizes):
            planes = width * 2**stage
            layer = []
            for index in range(blocks):
                stride = 1 if stage == 0 or index > 0 else 2
                if stage == len(stage_sizes) - 1 and index == 0:
                    stride = last_stride
                layer.append(block_class(inplanes, planes, stride))
                inplanes = planes * block_class.expansion
            setattr(self, f"layer{stage + 1}", nn.Sequential(*layer))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(inplanes, num_classes)

    def trunk(self, x):
        """NCHW images -> the layer4 feature map (no pooling, no fc)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for stage in range(1, 5):
            x = getattr(self, f"layer{stage}")(x)
        return x

    def forward(self, x):
        return self.fc(torch.flatten(self.avgpool(self.trunk(x)), 1))
