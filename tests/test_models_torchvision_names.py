"""torchvision ResNet state_dict names and shapes, written from the architecture definition.

Kept independent of `vreid_jax.models.pretrained` so the mapping is tested against an outside
description; other model tests import `torchvision_shapes` from here.
"""

import math

import numpy as np

RESNET50_PARAMS = 25_557_032  # torchvision resnet50(): parameters, buffers excluded.


def _bn(prefix, channels):
    return {
        f"{prefix}.weight": (channels,),
        f"{prefix}.bias": (channels,),
        f"{prefix}.running_mean": (channels,),
        f"{prefix}.running_var": (channels,),
        f"{prefix}.num_batches_tracked": (),
    }


def torchvision_shapes(stage_sizes=(3, 4, 6, 3), width=64, num_classes=1000):
    """Name -> torch-layout shape of a torchvision bottleneck ResNet's state_dict."""
    shapes = {"conv1.weight": (width, 3, 7, 7), **_bn("bn1", width)}
    inplanes = width
    for stage, blocks in enumerate(stage_sizes):
        planes = width * 2**stage
        for block in range(blocks):
            p = f"layer{stage + 1}.{block}"
            shapes[f"{p}.conv1.weight"] = (planes, inplanes, 1, 1)
            shapes.update(_bn(f"{p}.bn1", planes))
            shapes[f"{p}.conv2.weight"] = (planes, planes, 3, 3)
            shapes.update(_bn(f"{p}.bn2", planes))
            shapes[f"{p}.conv3.weight"] = (planes * 4, planes, 1, 1)
            shapes.update(_bn(f"{p}.bn3", planes * 4))
            if block == 0:
                shapes[f"{p}.downsample.0.weight"] = (planes * 4, inplanes, 1, 1)
                shapes.update(_bn(f"{p}.downsample.1", planes * 4))
            inplanes = planes * 4
    shapes["fc.weight"] = (num_classes, inplanes)
    shapes["fc.bias"] = (num_classes,)
    return shapes


def random_state_dict(shapes, seed=0):
    """Random torch-layout arrays; running variances positive."""
    rng = np.random.default_rng(seed)
    state = {}
    for name, shape in shapes.items():
        if name.endswith("num_batches_tracked"):
            state[name] = np.array(7, np.int64)
        elif name.endswith("running_var"):
            state[name] = rng.uniform(0.5, 1.5, shape).astype(np.float32)
        else:
            state[name] = rng.normal(0.0, 0.1, shape).astype(np.float32)
    return state


def test_synthesised_resnet50_has_torchvision_counts():
    shapes = torchvision_shapes()
    params = {
        k: s for k, s in shapes.items() if not k.rsplit(".", 1)[-1].startswith(("running", "num"))
    }
    assert sum(math.prod(s) for s in params.values()) == RESNET50_PARAMS
    assert len(params) == 161  # conv, BN affine and fc tensors of torchvision's resnet50
    assert len(shapes) == 320  # plus three buffers per BN
