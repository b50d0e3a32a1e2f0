"""ImageNet weights from torchvision's ResNet-50: name mapping, 2D import, NL3D/GLTR loading.

torchvision names (`layer2.0.downsample.1.running_mean`, ...) map by rule onto our parameter tree:
`layer{i}.{j}.X` -> `backbone/layer{i}_{j}/X`, `downsample.0/.1` -> `downsample_conv/_bn`, BN
`weight/bias` -> params `scale/bias`, `running_mean/var` -> batch_stats `mean/var`. Conv kernels go
from torch's `(out, in, h, w)` to flax's `(h, w, in, out)` and Linear weights are transposed.
`num_batches_tracked` is consumed and dropped (flax BN uses a fixed momentum, as torch does).

NL3D's spatial convs carry exactly the 2D kernels (the backbone shares their names), and its
temporal convs are reset to `config.model.temporal_init`: with 'inflate' the factorised pair is the
I3D inflation of each ImageNet kernel. Non-local blocks keep their identity init.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from vreid_jax.models import resnet, temporal

_BN_LEAVES = {
    "weight": ("params", "scale"),
    "bias": ("params", "bias"),
    "running_mean": ("batch_stats", "mean"),
    "running_var": ("batch_stats", "var"),
}
_BLOCK_KEY = re.compile(r"layer(\d+)\.(\d+)\.(conv\d|bn\d|downsample\.[01])\.(\w+)")
# Parameters NL3D adds to the 2D network: they have no torchvision counterpart.
_VIDEO_ONLY = ("conv2_temporal", "_nonlocal")


def flax_location(key: str) -> tuple[str, tuple[str, ...]] | None:
    """The (collection, path) of a torchvision ResNet state_dict key; None for a dropped buffer.

    Raises:
      ValueError: for a key that is not part of a torchvision ResNet.
    """
    parts = key.split(".")
    if parts[-1] == "num_batches_tracked":
        return None
    if key in ("fc.weight", "fc.bias"):
        return "params", ("fc", "kernel" if parts[1] == "weight" else "bias")
    if key == "conv1.weight":
        return "params", ("backbone", "conv1", "kernel")
    if parts[0] == "bn1" and len(parts) == 2 and parts[1] in _BN_LEAVES:
        collection, leaf = _BN_LEAVES[parts[1]]
        return collection, ("backbone", "bn1", leaf)
    match = _BLOCK_KEY.fullmatch(key)
    if match:
        stage, block, layer, leaf = match.groups()
        block_name = f"layer{stage}_{block}"
        layer = {"downsample.0": "downsample_conv", "downsample.1": "downsample_bn"}.get(
            layer, layer
        )
        if layer.endswith("conv") or layer.startswith("conv"):
            if leaf == "weight":
                return "params", ("backbone", block_name, layer, "kernel")
        elif leaf in _BN_LEAVES:
            collection, flax_leaf = _BN_LEAVES[leaf]
            return collection, ("backbone", block_name, layer, flax_leaf)
    raise ValueError(f"State-dict key {key!r} is not a torchvision ResNet parameter.")


def _to_flax_layout(value) -> np.ndarray:
    if hasattr(value, "detach"):  # A torch tensor; torch itself is never imported here.
        value = value.detach().cpu().numpy()
    value = np.asarray(value, dtype=np.float32)
    if value.ndim == 4:  # conv (out, in, h, w) -> (h, w, in, out)
        return value.transpose(2, 3, 1, 0)
    if value.ndim == 2:  # linear (out, in) -> (in, out)
        return value.T
    return value


def convert(state_dict, target, *, include_fc: bool, source: str) -> dict:
    """Maps `state_dict` onto `target`'s tree; every key used once, every 2D leaf filled once.

    Args:
      state_dict: torchvision names -> arrays (numpy or torch, torch layout).
      target: a variables tree (arrays or ShapeDtypeStructs) giving the expected paths and shapes.
      include_fc: map `fc.*` (the ImageNet classifier); otherwise those keys are skipped.
      source: names the weights in error messages (a file path, or 'state_dict').

    Returns:
      Flat dict `(collection, *path) -> float32 numpy array` in flax layout.

    Raises:
      ValueError: naming the key on an unknown key, a shape mismatch, or a missing parameter.
    """
    expected = traverse_util.flatten_dict(target)
    assigned = {}
    for key, value in state_dict.items():
        location = flax_location(key)
        if location is None or (location[1][0] == "fc" and not include_fc):
            continue
        flat_key = (location[0], *location[1])
        if flat_key not in expected:
            raise ValueError(
                f"{source}: key {key!r} maps to {'/'.join(flat_key)}, which this model lacks "
                "(is the depth or stage layout different?)."
            )
        array = _to_flax_layout(value)
        if array.shape != tuple(expected[flat_key].shape):
            raise ValueError(
                f"{source}: key {key!r} has shape {np.shape(value)} (flax layout {array.shape}), "
                f"but {'/'.join(flat_key)} expects {tuple(expected[flat_key].shape)} "
                "(is config.model.width or depth different?)."
            )
        if flat_key in assigned:
            raise ValueError(f"{source}: key {key!r} fills {'/'.join(flat_key)} a second time.")
        assigned[flat_key] = array
    needed = [
        k
        for k in expected
        if (k[1] == "backbone" or (include_fc and k[1] == "fc"))
        and not any(marker in part for part in k for marker in _VIDEO_ONLY)
    ]
    missing = [k for k in needed if k not in assigned]
    if missing:
        raise ValueError(
            f"{source}: no weights for {len(missing)} parameters, e.g. {'/'.join(missing[0])}."
        )
    return assigned


def resnet50_classifier() -> resnet.ResNetClassifier:
    """torchvision's `resnet50()` architecture (last stride 2, 1000 classes) in flax."""
    return resnet.ResNetClassifier(
        backbone=resnet.ResNet(stage_sizes=resnet.STAGE_SIZES[50], width=64, last_stride=2),
        num_classes=1000,
    )


def from_torchvision(state_dict) -> tuple[resnet.ResNetClassifier, dict]:
    """A flax ResNet-50 and variables whose eval logits equal torchvision's `resnet50().eval()`.

    Args:
      state_dict: torchvision's `resnet50().state_dict()` names -> numpy arrays or tensors.

    Returns:
      `(module, variables)`; call `module.apply(variables, images_nhwc, train=False)`.
    """
    module = resnet50_classifier()
    target = jax.eval_shape(
        module.init, jax.random.key(0), jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32)
    )
    flat = convert(state_dict, target, include_fc=True, source="state_dict")
    missing = [k for k in traverse_util.flatten_dict(target) if k not in flat]
    if missing:
        raise ValueError(f"state_dict: no weights for {'/'.join(missing[0])}.")
    variables = traverse_util.unflatten_dict({k: jnp.asarray(v) for k, v in flat.items()})
    return module, variables


def load_npz(npz_path: str) -> dict[str, np.ndarray]:
    """Reads a `.npz` written by `python -m data_prep.convert_resnet50`."""
    try:
        with np.load(npz_path) as data:
            return {name: data[name] for name in data.files}
    except (OSError, ValueError) as e:
        raise ValueError(f"config.model.pretrained={npz_path!r} cannot be read: {e}") from e


def load_into(variables: dict, npz_path: str, model_config) -> dict:
    """Returns `variables` with the ImageNet ResNet weights of `npz_path` in the backbone.

    GLTR's frame encoder takes the 2D weights as they are; NL3D takes them as its spatial kernels
    and gets its temporal taps reset to `model_config.temporal_init` (inflation). The ImageNet
    classifier is not used. Everything not in the file (heads, non-local blocks) is kept.

    Raises:
      ValueError: naming the key on a shape mismatch or a missing or unknown key.
    """
    if model_config.name not in ("nl3d", "gltr"):
        raise ValueError(f"config.model.name={model_config.name!r} has no pretrained loader.")
    flat = traverse_util.flatten_dict(variables)
    updates = convert(load_npz(npz_path), variables, include_fc=False, source=npz_path)
    for flat_key, array in updates.items():
        flat[flat_key] = jnp.asarray(array, dtype=flat[flat_key].dtype)
    if model_config.name == "nl3d":
        for flat_key, value in flat.items():
            if flat_key[-2:] == ("conv2_temporal", "kernel"):
                kernel_size, channels = value.shape[0], value.shape[-1]
                flat[flat_key] = temporal.identity_taps(
                    kernel_size, channels, model_config.temporal_init
                ).astype(value.dtype)
    return traverse_util.unflatten_dict(flat)
