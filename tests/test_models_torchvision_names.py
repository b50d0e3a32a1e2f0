"""The torchvision description the weight-import tests rely on (tests/torchvision_reference.py)
matches torchvision's published parameter counts."""

import math

from torchvision_reference import RESNET50_PARAMS, RESNET_PARAMS, torchvision_shapes


def _params(shapes):
    return {
        k: s for k, s in shapes.items() if not k.rsplit(".", 1)[-1].startswith(("running", "num"))
    }


def test_synthesised_resnet50_has_torchvision_counts():
    shapes = torchvision_shapes()
    params = _params(shapes)
    assert sum(math.prod(s) for s in params.values()) == RESNET50_PARAMS
    assert len(params) == 161  # conv, BN affine and fc tensors of torchvision's resnet50
    assert len(shapes) == 320  # plus three buffers per BN


def test_synthesised_resnets_of_every_depth_have_torchvision_counts():
    for (block, sizes), count in RESNET_PARAMS.items():
        params = _params(torchvision_shapes(sizes, block=block))
        assert sum(math.prod(s) for s in params.values()) == count, (block, sizes)
