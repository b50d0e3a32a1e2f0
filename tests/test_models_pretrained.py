"""ImageNet import: torchvision key mapping for every ResNet depth, parameter counts, overlay onto
NL3D and GLTR, and the errors a wrong file gets."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util
from torchvision_reference import (
    RESNET50_PARAMS,
    RESNET_PARAMS,
    random_state_dict,
    torchvision_shapes,
)

from configs.default import get_config
from vreid_jax import models
from vreid_jax.models import layers, pretrained


def test_from_torchvision_consumes_every_key_once_with_matching_shapes():
    shapes = torchvision_shapes()
    state = random_state_dict(shapes)
    module, variables = pretrained.from_torchvision(state)

    abstract = jax.eval_shape(
        module.init, jax.random.key(0), jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32)
    )
    assert jax.tree.structure(abstract) == jax.tree.structure(variables)
    for a, v in zip(jax.tree.leaves(abstract), jax.tree.leaves(variables), strict=True):
        assert a.shape == v.shape and v.dtype == jnp.float32
    assert layers.count_params(variables["params"]) == RESNET50_PARAMS

    # Every non-buffer key lands at a distinct leaf; `num_batches_tracked` is dropped.
    locations = [pretrained.flax_location(k) for k in shapes]
    kept = [(c, *p) for loc in locations if loc is not None for c, p in [loc]]
    assert len(kept) == len(set(kept)) == len(jax.tree.leaves(variables))
    assert sum(loc is None for loc in locations) == 53  # one per BatchNorm

    # Layout: conv (out, in, h, w) -> (h, w, in, out); linear transposed; BN stats to batch_stats.
    block = variables["params"]["backbone"]["layer2_0"]
    np.testing.assert_array_equal(
        block["downsample_conv"]["kernel"],
        state["layer2.0.downsample.0.weight"].transpose(2, 3, 1, 0),
    )
    np.testing.assert_array_equal(variables["params"]["fc"]["kernel"], state["fc.weight"].T)
    np.testing.assert_array_equal(
        variables["batch_stats"]["backbone"]["layer4_2"]["bn3"]["var"],
        state["layer4.2.bn3.running_var"],
    )


@pytest.mark.parametrize("block, sizes", list(RESNET_PARAMS))
def test_flax_resnets_have_torchvision_counts_and_architecture(block, sizes):
    architecture = pretrained.Architecture(block, sizes, 64)
    module = pretrained.classifier_for(architecture, num_classes=1000)
    abstract = jax.eval_shape(
        module.init, jax.random.key(0), jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32)
    )
    assert layers.count_params(abstract["params"]) == RESNET_PARAMS[(block, sizes)]
    shapes = torchvision_shapes(sizes, block=block)
    views = {k: np.broadcast_to(np.float32(0), shape) for k, shape in shapes.items()}
    assert pretrained.architecture_of(views, "f") == architecture
    assert "torchvision resnet" in str(architecture)
    # Every torchvision key lands on a distinct leaf of the flax tree, and back.
    kept = {(c, *p) for c, p in filter(None, map(pretrained.flax_location, shapes))}
    assert kept == set(traverse_util.flatten_dict(abstract))
    assert {pretrained.torchvision_key(k) for k in kept} == {
        k for k in shapes if not k.endswith("num_batches_tracked")
    }


def test_from_torchvision_takes_a_basic_block_resnet():
    state = random_state_dict(torchvision_shapes((2, 1, 1, 1), width=8, block="basic"))
    module, variables = pretrained.from_torchvision(state)
    assert module.backbone.block == "basic" and tuple(module.backbone.stage_sizes) == (2, 1, 1, 1)
    block = variables["params"]["backbone"]["layer1_1"]
    np.testing.assert_array_equal(
        block["conv1"]["kernel"], state["layer1.1.conv1.weight"].transpose(2, 3, 1, 0)
    )
    assert "downsample_conv" not in variables["params"]["backbone"]["layer1_0"]  # 8 -> 8, stride 1


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda s: s.pop("layer3.5.bn2.running_mean"), "no weights for 1 parameters.*bn2"),
        (lambda s: s.__setitem__("layer5.0.conv1.weight", np.zeros((1, 1, 1, 1))), "layer5.0"),
        (lambda s: s.__setitem__("head.weight", np.zeros(1)), "'head.weight'"),
        (lambda s: s.pop("conv1.weight"), "no key 'conv1.weight'"),
        (
            lambda s: s.__setitem__("layer1.0.conv2.weight", np.zeros((64, 64, 1, 1))),
            "'layer1.0.conv2.weight'",
        ),
    ],
)
def test_from_torchvision_rejects_bad_state_dicts(edit, message):
    state = random_state_dict(torchvision_shapes())
    edit(state)
    with pytest.raises(pretrained.PretrainedWeightsError, match=message):
        pretrained.from_torchvision(state)


def _tiny_config(name, **overrides):
    config = get_config().model
    config.name = name
    config.stage_sizes = (1, 1, 1, 1)
    config.width = 8
    config.nonlocal_blocks = ((), (0,), (0,), ())
    config.update(overrides)
    return config


def _abstract_init(module):
    clips = jax.ShapeDtypeStruct((1, 3, 64, 32, 3), jnp.float32)
    keys = {"params": jax.random.key(0), "dropout": jax.random.key(1)}
    return jax.eval_shape(lambda c: module.init(keys, c, train=False), clips)


def _zeros_like(abstract):
    return jax.tree.map(lambda a: np.full(a.shape, 0.25, np.float32), abstract)


@pytest.mark.parametrize("name", ["nl3d", "gltr"])
def test_load_into_fills_backbone_and_keeps_the_rest(name, tmp_path):
    config = _tiny_config(name, temporal_init="inflate", temporal_kernel=3)
    module = models.build_model(config, num_classes=5)
    variables = _zeros_like(_abstract_init(module))
    state = random_state_dict(torchvision_shapes((1, 1, 1, 1), width=8))
    path = tmp_path / "tiny.npz"
    np.savez(path, **state)

    loaded = pretrained.load_into(variables, str(path), config)
    flat = traverse_util.flatten_dict(loaded)
    backbone = loaded["params"]["backbone"]
    np.testing.assert_array_equal(
        backbone["layer3_0"]["conv2"]["kernel"],
        state["layer3.0.conv2.weight"].transpose(2, 3, 1, 0),
    )
    np.testing.assert_array_equal(
        loaded["batch_stats"]["backbone"]["bn1"]["mean"], state["bn1.running_mean"]
    )
    for key, value in flat.items():
        # Heads, DTP/TSA, temporal convs and non-local blocks have no ImageNet counterpart: left
        # as they were.
        if key[1] != "backbone" or any(p.endswith(("_nonlocal", "_temporal")) for p in key):
            np.testing.assert_array_equal(value, 0.25)
        else:
            assert not np.all(value == 0.25), key


def _write_npz(tmp_path, name, **shape_kwargs):
    path = tmp_path / name
    np.savez(path, **random_state_dict(torchvision_shapes(**shape_kwargs)))
    return str(path)


@pytest.mark.parametrize(
    "file_kwargs, config_overrides, message",
    [
        # Wider file: the stem's shapes differ; both shapes and both architectures are named.
        (
            dict(stage_sizes=(1, 1, 1, 1), width=16),
            {},
            r"key 'conv1\.weight' has shape \(16, 3, 7, 7\), but the model's "
            r"params/backbone/conv1/kernel needs \(8, 3, 7, 7\).*width 16.*width 8",
        ),
        # Deeper file: a block the model lacks.
        (
            dict(stage_sizes=(2, 1, 1, 1), width=8),
            {},
            r"key 'layer1\.1\.conv1\.weight' maps to params/backbone/layer1_1/conv1/kernel, "
            r"which this model lacks.*stages \(2, 1, 1, 1\)",
        ),
        # Shallower file: parameters the model needs are missing, named by torchvision key.
        (
            dict(stage_sizes=(1, 1, 1, 1), width=8),
            dict(stage_sizes=(1, 2, 1, 1)),
            r"no weights for \d+ parameters, e\.g\. key 'layer2\.1\.",
        ),
        # A ResNet-50-style file for a ResNet-18-style config: block types differ.
        (
            dict(stage_sizes=(1, 1, 1, 1), width=8),
            dict(depth=18),
            r"key 'layer1\.0\.conv1\.weight' has shape \(8, 8, 1, 1\).*needs \(8, 8, 3, 3\).*"
            r"holds a bottleneck ResNet.*builds a basic ResNet",
        ),
    ],
)
@pytest.mark.parametrize("name", ["nl3d", "gltr"])
def test_load_into_names_file_key_and_shapes_on_mismatch(
    name, file_kwargs, config_overrides, message, tmp_path
):
    config = _tiny_config(name, **config_overrides)
    variables = _zeros_like(_abstract_init(models.build_model(config, num_classes=5)))
    path = _write_npz(tmp_path, "weights.npz", **file_kwargs)
    with pytest.raises(pretrained.PretrainedWeightsError, match=r"weights\.npz: " + message):
        pretrained.load_into(variables, path, config)


def test_load_into_rejects_unreadable_or_foreign_files(tmp_path):
    config = _tiny_config("gltr")
    path = tmp_path / "broken.npz"
    path.write_bytes(b"not a zip")
    with pytest.raises(pretrained.PretrainedWeightsError, match="config.model.pretrained="):
        pretrained.load_into({}, str(path), config)
    torch = pytest.importorskip("torch")
    torch_file = tmp_path / "resnet50.pth"
    torch.save({"conv1.weight": torch.zeros(8, 3, 7, 7)}, torch_file)
    with pytest.raises(pretrained.PretrainedWeightsError, match="is a PyTorch checkpoint; convert"):
        pretrained.load_into({}, str(torch_file), config)
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, **{"encoder.weight": np.zeros((2, 2))})
    with pytest.raises(
        pretrained.PretrainedWeightsError, match="foreign.npz: not a torchvision ResNet"
    ):
        pretrained.load_into({}, str(foreign), config)
