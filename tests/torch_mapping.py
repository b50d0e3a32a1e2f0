"""What the plain-torch reference models (`torch_gltr.py`, `torch_nl3d.py`) share: the strict check
of a torch -> flax weight mapping, and random batch-norm statistics that make every tensor count."""

import numpy as np
import torch
from flax import traverse_util
from torch import nn


def check_one_to_one(flat: dict, target, unused=()) -> dict:
    """Raises unless `flat` (`(collection, *path) -> array`) fills exactly the leaves of `target`
    (our variables tree), each with its shape, and no torch tensor (`unused`) was left over."""
    expected = traverse_util.flatten_dict(target)
    if unused or flat.keys() != expected.keys():
        raise AssertionError(
            f"mapping not one-to-one: unused torch tensors {sorted(unused)}, missing "
            f"{sorted(set(expected) - set(flat))}, extra {sorted(set(flat) - set(expected))}"
        )
    for key, value in flat.items():
        if value.shape != tuple(expected[key].shape):
            raise AssertionError(f"{key}: shape {value.shape}, expected {expected[key].shape}")
    return flat


def as_flax_variables(flat: dict) -> dict:
    """A checked flat mapping as a float32 variables tree."""
    return traverse_util.unflatten_dict({k: v.astype(np.float32) for k, v in flat.items()})


def randomise_batch_norms(net: nn.Module, gen: torch.Generator) -> None:
    """Random affine parameters and running statistics in every BN of `net` (zero-initialised
    output BNs included), so that a mismatch in any of them shows in the outputs."""
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, nn.BatchNorm1d | nn.BatchNorm2d):
                n = module.num_features
                module.weight.copy_(1 + 0.2 * torch.randn(n, generator=gen))
                module.bias.copy_(0.2 * torch.randn(n, generator=gen))
                module.running_mean.copy_(0.2 * torch.randn(n, generator=gen))
                module.running_var.copy_(0.5 + torch.rand(n, generator=gen))
