"""Numeric parity with a torchvision-architecture ResNet written here in plain torch.

torchvision has no CPU build in this environment, so the reference network is written from the
architecture definition (bottleneck v1.5: stride on the 3x3 conv; 7x7/2 stem, 3x3/2 max-pool with
padding 1; projection shortcut on the first block of each stage), with torchvision's module names.
Skipped when torch is not installed (it is the optional `torch` extra).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util
from test_models_torchvision_names import RESNET50_PARAMS

from vreid_jax.models import pretrained, resnet

torch = pytest.importorskip("torch")
tnn = torch.nn


class _Bottleneck(tnn.Module):
    def __init__(self, inplanes, planes, stride, project):
        super().__init__()
        self.conv1 = tnn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = tnn.BatchNorm2d(planes)
        self.conv2 = tnn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = tnn.BatchNorm2d(planes)
        self.conv3 = tnn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = tnn.BatchNorm2d(planes * 4)
        self.relu = tnn.ReLU()
        self.downsample = None
        if project:
            self.downsample = tnn.Sequential(
                tnn.Conv2d(inplanes, planes * 4, 1, stride=stride, bias=False),
                tnn.BatchNorm2d(planes * 4),
            )

    def forward(self, x):
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(y + shortcut)


class _TorchResNet(tnn.Module):
    def __init__(self, stage_sizes, width, num_classes):
        super().__init__()
        self.conv1 = tnn.Conv2d(3, width, 7, stride=2, padding=3, bias=False)
        self.bn1 = tnn.BatchNorm2d(width)
        self.relu = tnn.ReLU()
        self.maxpool = tnn.MaxPool2d(3, stride=2, padding=1)
        inplanes = width
        for stage, blocks in enumerate(stage_sizes):
            planes = width * 2**stage
            layer = []
            for block in range(blocks):
                stride = 2 if stage > 0 and block == 0 else 1
                layer.append(_Bottleneck(inplanes, planes, stride, block == 0))
                inplanes = planes * 4
            setattr(self, f"layer{stage + 1}", tnn.Sequential(*layer))
        self.avgpool = tnn.AdaptiveAvgPool2d(1)
        self.fc = tnn.Linear(inplanes, num_classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for stage in range(1, 5):
            x = getattr(self, f"layer{stage}")(x)
        return self.fc(torch.flatten(self.avgpool(x), 1))


def _randomised(net, seed):
    """Non-trivial BN statistics and affine parameters, so every mapped tensor matters."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, tnn.BatchNorm2d):
                n = module.num_features
                module.weight.copy_(1 + 0.2 * torch.randn(n, generator=gen))
                module.bias.copy_(0.2 * torch.randn(n, generator=gen))
                module.running_mean.copy_(0.2 * torch.randn(n, generator=gen))
                module.running_var.copy_(0.5 + torch.rand(n, generator=gen))
    return net.eval()


def _numpy_state(net):
    return {k: v.detach().numpy() for k, v in net.state_dict().items()}


@pytest.mark.parametrize("height, width", [(64, 48), (67, 45)])  # even and odd: padding symmetry
def test_tiny_resnet_matches_torch(height, width):
    torch.manual_seed(0)
    net = _randomised(_TorchResNet((1, 1, 1, 1), 8, 10), seed=1)
    module = resnet.ResNetClassifier(
        backbone=resnet.ResNet(stage_sizes=(1, 1, 1, 1), width=8, last_stride=2), num_classes=10
    )
    target = jax.eval_shape(
        module.init, jax.random.key(0), jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32)
    )
    flat = pretrained.convert(_numpy_state(net), target, include_fc=True, source="tiny")
    variables = traverse_util.unflatten_dict(flat)
    images = np.random.default_rng(2).normal(size=(2, 3, height, width)).astype(np.float32)
    with torch.no_grad():
        expected = net(torch.from_numpy(images)).numpy()
    got = module.apply(variables, images.transpose(0, 2, 3, 1), train=False)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_resnet50_from_torchvision_matches_torch():
    torch.manual_seed(0)
    net = _randomised(_TorchResNet((3, 4, 6, 3), 64, 1000), seed=1)
    assert sum(p.numel() for p in net.parameters()) == RESNET50_PARAMS
    module, variables = pretrained.from_torchvision(net.state_dict())  # tensors accepted as-is
    images = np.random.default_rng(2).normal(size=(2, 3, 224, 224)).astype(np.float32)
    with torch.no_grad():
        expected = net(torch.from_numpy(images)).numpy()
    got = jax.jit(lambda v, x: module.apply(v, x, train=False))(
        variables, images.transpose(0, 2, 3, 1)
    )
    np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-3)
