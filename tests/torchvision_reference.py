"""torchvision ResNet state_dict names, shapes and parameter counts, written from the architecture
definition and kept independent of `vreid_jax.models.pretrained`, so that the weight import is tested
against an outside description. Shared by the model tests.
"""

import numpy as np

RESNET50_PARAMS = 25_557_032  # torchvision resnet50(): parameters, buffers excluded.
# torchvision's published parameter counts of the other depths.
RESNET_PARAMS = {
    ("basic", (2, 2, 2, 2)): 11_689_512,  # resnet18
    ("basic", (3, 4, 6, 3)): 21_797_672,  # resnet34
    ("bottleneck", (3, 4, 6, 3)): RESNET50_PARAMS,
    ("bottleneck", (3, 4, 23, 3)): 44_549_160,  # resnet101
    ("bottleneck", (3, 8, 36, 3)): 60_192_808,  # resnet152
}


def _bn(prefix, channels):
    return {
        f"{prefix}.weight": (channels,),
        f"{prefix}.bias": (channels,),
        f"{prefix}.running_mean": (channels,),
        f"{prefix}.running_var": (channels,),
        f"{prefix}.num_batches_tracked": (),
    }


def torchvision_shapes(stage_sizes=(3, 4, 6, 3), width=64, num_classes=1000, block="bottleneck"):
    """Name -> torch-layout shape of a torchvision ResNet's state_dict (basic or bottleneck)."""
    shapes = {"conv1.weight": (width, 3, 7, 7), **_bn("bn1", width)}
    expansion = 4 if block == "bottleneck" else 1
    inplanes = width
    for stage, blocks in enumerate(stage_sizes):
        planes = width * 2**stage
        for index in range(blocks):
            p = f"layer{stage + 1}.{index}"
            stride = 2 if stage > 0 and index == 0 else 1
            if block == "bottleneck":
                convs = [(planes, inplanes, 1), (planes, planes, 3), (planes * 4, planes, 1)]
            else:
                convs = [(planes, inplanes, 3), (planes, planes, 3)]
            for i, (out, cin, k) in enumerate(convs, start=1):
                shapes[f"{p}.conv{i}.weight"] = (out, cin, k, k)
                shapes.update(_bn(f"{p}.bn{i}", out))
            if stride != 1 or inplanes != planes * expansion:
                shapes[f"{p}.downsample.0.weight"] = (planes * expansion, inplanes, 1, 1)
                shapes.update(_bn(f"{p}.downsample.1", planes * expansion))
            inplanes = planes * expansion
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
