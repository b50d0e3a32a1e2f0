"""ImageNet weights from any torchvision ResNet: name mapping, 2D import, NL3D/GLTR overlay.

torchvision names (`layer2.0.downsample.1.running_mean`, ...) map by rule onto our parameter tree:
`layer{i}.{j}.X` -> `backbone/layer{i}_{j}/X`, `downsample.0/.1` -> `downsample_conv/_bn`, BN
`weight/bias` -> params `scale/bias`, `running_mean/var` -> batch_stats `mean/var`. Conv kernels go
from torch's `(out, in, h, w)` to flax's `(h, w, in, out)` and Linear weights are transposed.
`num_batches_tracked` is consumed and dropped (flax BN uses a fixed momentum, as torch does). The
same rule covers resnet18/34 (basic blocks) and resnet50/101/152 (bottlenecks), and narrower or
shallower ResNets written with torchvision's module names (the demo's and the tests').

A model started from ImageNet weights is the model's own random initialisation with exactly the
parameters the file provides overlaid (`load_into`): NL3D's spatial convs take the 2D kernels (the
backbone shares their names), its temporal convs and non-local blocks keep their initialisation
(identity taps per `config.model.temporal_init`, so each factorised pair is the I3D inflation of the
ImageNet kernel), and every head keeps its random init.
"""

from __future__ import annotations

import dataclasses
import os
import re

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from vreid_jax.errors import UserError
from vreid_jax.models import registry, resnet


class PretrainedWeightsError(UserError):
    """A weights file that is unreadable, not the network it should be (a torchvision ResNet, a CLIP
    ViT), or not the configured one."""


_BN_LEAVES = {
    "weight": ("params", "scale"),
    "bias": ("params", "bias"),
    "running_mean": ("batch_stats", "mean"),
    "running_var": ("batch_stats", "var"),
}
_BLOCK_KEY = re.compile(r"layer(\d+)\.(\d+)\.(conv\d|bn\d|downsample\.[01])\.(\w+)")
_TORCH_LAYER = {"downsample.0": "downsample_conv", "downsample.1": "downsample_bn"}
# Parameters the video models add to the 2D network: they have no torchvision counterpart.
_VIDEO_ONLY_SUFFIXES = ("_temporal", "_nonlocal")


@dataclasses.dataclass(frozen=True)
class Architecture:
    """The shape of a torchvision ResNet: block type, blocks per stage, stem width."""

    block: str
    stage_sizes: tuple[int, ...]
    width: int

    def __str__(self) -> str:
        text = f"{self.block} ResNet with stages {self.stage_sizes} and width {self.width}"
        for depth, sizes in registry.STAGE_SIZES.items():
            if (sizes, registry.block_for(depth), 64) == (self.stage_sizes, self.block, self.width):
                return f"{text} (torchvision resnet{depth})"
        return text


def configured_architecture(model_config) -> Architecture:
    """The backbone `config.model` builds (depth, stage_sizes, width)."""
    return Architecture(
        block=registry.block_for(model_config.depth),
        stage_sizes=registry.stage_sizes_for(model_config.depth, model_config.stage_sizes),
        width=model_config.width,
    )


def architecture_of(state_dict, source: str) -> Architecture:
    """Reads the architecture off a torchvision ResNet state_dict's names and stem shape.

    Raises:
      PretrainedWeightsError: when the names are not those of a torchvision ResNet.
    """
    if "conv1.weight" not in state_dict:
        sample = ", ".join(repr(k) for k in list(state_dict)[:4]) or "none"
        raise PretrainedWeightsError(
            f"{source}: not a torchvision ResNet state_dict: no key 'conv1.weight' "
            f"(first keys: {sample})."
        )
    blocks: dict[int, set[int]] = {}
    for key in state_dict:
        match = _BLOCK_KEY.fullmatch(key)
        if match:
            blocks.setdefault(int(match.group(1)), set()).add(int(match.group(2)))
    if not {1, 2, 3, 4} <= set(blocks):
        raise PretrainedWeightsError(
            f"{source}: not a torchvision ResNet state_dict: expected blocks in layer1..layer4, "
            f"found layers {sorted(blocks)}."
        )
    block = "bottleneck" if "layer1.0.conv3.weight" in state_dict else "basic"
    return Architecture(
        block=block,
        stage_sizes=tuple(max(blocks[stage]) + 1 for stage in (1, 2, 3, 4)),
        width=int(np.shape(state_dict["conv1.weight"])[0]),
    )


def flax_location(key: str) -> tuple[str, tuple[str, ...]] | None:
    """The (collection, path) of a torchvision ResNet state_dict key; None for a dropped buffer.

    Raises:
      PretrainedWeightsError: for a key that is not part of a torchvision ResNet.
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
        layer = _TORCH_LAYER.get(layer, layer)
        if layer.endswith("conv") or layer.startswith("conv"):
            if leaf == "weight":
                return "params", ("backbone", block_name, layer, "kernel")
        elif leaf in _BN_LEAVES:
            collection, flax_leaf = _BN_LEAVES[leaf]
            return collection, ("backbone", block_name, layer, flax_leaf)
    raise PretrainedWeightsError(f"State-dict key {key!r} is not a torchvision ResNet parameter.")


def torchvision_key(flat_key: tuple[str, ...]) -> str:
    """The torchvision state_dict name of a flattened `(collection, *path)` backbone or fc leaf."""
    collection, *path = flat_key
    if path[0] == "fc":
        return f"fc.{'weight' if path[-1] == 'kernel' else 'bias'}"
    *layers, leaf = path[1:]  # Drop 'backbone'.
    inverse = {flax: torch for torch, flax in _TORCH_LAYER.items()}
    names = []
    for layer in layers:
        block = re.fullmatch(r"layer(\d+)_(\d+)", layer)
        names.append(f"layer{block[1]}.{block[2]}" if block else inverse.get(layer, layer))
    torch_leaf = next(
        (name for name, location in _BN_LEAVES.items() if location == (collection, leaf)), "weight"
    )
    return ".".join([*names, torch_leaf])


def _to_flax_layout(value) -> np.ndarray:
    if hasattr(value, "detach"):  # A torch tensor; torch itself is never imported here.
        value = value.detach().cpu().numpy()
    value = np.asarray(value, dtype=np.float32)
    if value.ndim == 4:  # conv (out, in, h, w) -> (h, w, in, out)
        return value.transpose(2, 3, 1, 0)
    if value.ndim == 2:  # linear (out, in) -> (in, out)
        return value.T
    return value


def _torch_layout(flax_shape: tuple[int, ...]) -> tuple[int, ...]:
    """The torch-layout shape of a flax-layout conv kernel or Dense weight (inverse of the above)."""
    if len(flax_shape) == 4:
        return (flax_shape[3], flax_shape[2], flax_shape[0], flax_shape[1])
    if len(flax_shape) == 2:
        return flax_shape[::-1]
    return flax_shape


def _is_video_only(flat_key: tuple[str, ...]) -> bool:
    return any(part.endswith(_VIDEO_ONLY_SUFFIXES) for part in flat_key)


def convert(state_dict, target, *, include_fc: bool, source: str, expected_architecture=None):
    """Maps `state_dict` onto `target`'s tree; every key used once, every 2D leaf filled once.

    Args:
      state_dict: torchvision names -> arrays (numpy or torch, torch layout).
      target: a variables tree (arrays or ShapeDtypeStructs) giving the expected paths and shapes.
      include_fc: map `fc.*` (the ImageNet classifier); otherwise those keys are skipped.
      source: names the weights in error messages (a file path, or 'state_dict').
      expected_architecture: what `target` was built as, named in error messages.

    Returns:
      Flat dict `(collection, *path) -> float32 numpy array` in flax layout.

    Raises:
      PretrainedWeightsError: naming the key and both shapes on a mismatch, an unknown key or a
        missing parameter.
    """
    expected = traverse_util.flatten_dict(target)

    def mismatch(detail: str) -> PretrainedWeightsError:
        context = ""
        if expected_architecture is not None:
            context = (
                f" The file holds a {architecture_of(state_dict, source)}; config.model builds a "
                f"{expected_architecture} (config.model.depth, stage_sizes and width)."
            )
        return PretrainedWeightsError(f"{source}: {detail}.{context}")

    assigned = {}
    for key, value in state_dict.items():
        try:
            location = flax_location(key)
        except PretrainedWeightsError as e:
            raise PretrainedWeightsError(f"{source}: {e}") from None
        if location is None or (location[1][0] == "fc" and not include_fc):
            continue
        flat_key = (location[0], *location[1])
        if flat_key not in expected:
            raise mismatch(f"key {key!r} maps to {'/'.join(flat_key)}, which this model lacks")
        array = _to_flax_layout(value)
        want = tuple(expected[flat_key].shape)
        if array.shape != want:
            raise mismatch(
                f"key {key!r} has shape {tuple(np.shape(value))}, but the model's "
                f"{'/'.join(flat_key)} needs {_torch_layout(want)} (torch layout)"
            )
        if flat_key in assigned:
            raise mismatch(f"key {key!r} fills {'/'.join(flat_key)} a second time")
        assigned[flat_key] = array
    needed = [
        k
        for k in expected
        if (k[1] == "backbone" or (include_fc and k[1] == "fc")) and not _is_video_only(k)
    ]
    missing = [k for k in needed if k not in assigned]
    if missing:
        first = missing[0]
        raise mismatch(
            f"no weights for {len(missing)} parameters, e.g. key {torchvision_key(first)!r} "
            f"for {'/'.join(first)} of shape {tuple(expected[first].shape)}"
        )
    return assigned


def classifier_for(architecture: Architecture, num_classes: int) -> resnet.ResNetClassifier:
    """torchvision's `resnet*()` of this architecture (last stride 2) as a flax module."""
    return resnet.ResNetClassifier(
        backbone=resnet.ResNet(
            stage_sizes=architecture.stage_sizes,
            block=architecture.block,
            width=architecture.width,
            last_stride=2,
        ),
        num_classes=num_classes,
    )


def from_torchvision(state_dict, source: str = "state_dict"):
    """A flax ResNet and variables whose eval logits equal the torchvision ResNet's `.eval()`.

    Args:
      state_dict: a torchvision ResNet's `state_dict()` names -> numpy arrays or tensors, with its
        `fc` classifier (resnet18/34/50/101/152, or narrower/shallower ones with the same names).
      source: names the weights in error messages.

    Returns:
      `(module, variables)`; call `module.apply(variables, images_nhwc, train=False)`.

    Raises:
      PretrainedWeightsError: naming the key when the state_dict is not a complete ResNet.
    """
    architecture = architecture_of(state_dict, source)
    if "fc.weight" not in state_dict:
        raise PretrainedWeightsError(f"{source}: no classifier 'fc.weight' in the state_dict.")
    module = classifier_for(architecture, int(np.shape(state_dict["fc.weight"])[0]))
    target = jax.eval_shape(
        module.init, jax.random.key(0), jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32)
    )
    flat = convert(state_dict, target, include_fc=True, source=source)
    variables = traverse_util.unflatten_dict({k: jnp.asarray(v) for k, v in flat.items()})
    return module, variables


def require_file(npz_path: str) -> None:
    """Fails early, before any data is read, when `config.model.pretrained` names no file."""
    if not os.path.isfile(npz_path):
        raise PretrainedWeightsError(
            f"config.model.pretrained={npz_path!r}: no such file. Convert torchvision's ImageNet "
            "weights once with `python -m vreid_jax.models.convert_resnet50 --torch_checkpoint "
            "resnet50-0676ba61.pth --out resnet50.npz` (TF-CLIP: OpenAI's ViT-B-16.pt with "
            "`python -m vreid_jax.models.convert_clip --weights ViT-B-16.pt --out ViT-B-16.npz`; "
            "README, Training recipes), or set --config.model.pretrained='' to start from random "
            "weights."
        )


def load_npz(npz_path: str) -> dict[str, np.ndarray]:
    """Reads a `.npz` written by `python -m vreid_jax.models.convert_resnet50`."""
    try:
        with np.load(npz_path) as data:
            # torch.save writes a zip archive too; np.load lists its pickle as an entry.
            torch_checkpoint = any(name.endswith("data.pkl") for name in data.files)
            arrays = {} if torch_checkpoint else {name: data[name] for name in data.files}
    except (OSError, ValueError, AttributeError) as e:
        raise PretrainedWeightsError(
            f"config.model.pretrained={npz_path!r} cannot be read as a .npz from "
            f"`python -m vreid_jax.models.convert_resnet50`: {e}"
        ) from e
    if torch_checkpoint:
        raise PretrainedWeightsError(
            f"config.model.pretrained={npz_path!r} is a PyTorch checkpoint; convert it first: "
            "python -m vreid_jax.models.convert_resnet50 --torch_checkpoint "
            f"{npz_path} --out resnet50.npz"
        )
    return arrays


def load_into(variables: dict, npz_path: str, model_config) -> dict:
    """`variables` (host arrays of the model's own init) with the file's ResNet weights overlaid.

    Every backbone leaf the 2D ResNet has is replaced by the file's; the ImageNet classifier is
    not used; everything else (temporal convs, non-local blocks, heads) is kept as it is.

    Raises:
      PretrainedWeightsError: naming the file, the key and both shapes when the file is not the
        configured ResNet (depth, stage sizes, width).
    """
    state_dict = load_npz(npz_path)
    architecture_of(state_dict, npz_path)  # A clear message for a file that is no ResNet at all.
    flat = traverse_util.flatten_dict(variables)
    updates = convert(
        state_dict,
        variables,
        include_fc=False,
        source=npz_path,
        expected_architecture=configured_architecture(model_config),
    )
    for flat_key, array in updates.items():
        flat[flat_key] = np.asarray(array, dtype=flat[flat_key].dtype)
    return traverse_util.unflatten_dict(flat)
