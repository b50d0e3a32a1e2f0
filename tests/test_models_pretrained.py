"""ImageNet import: torchvision key mapping, parameter counts, loading into NL3D and GLTR."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util
from test_models_torchvision_names import RESNET50_PARAMS, random_state_dict, torchvision_shapes

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


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda s: s.pop("layer3.5.bn2.running_mean"), "no weights for"),
        (lambda s: s.__setitem__("layer5.0.conv1.weight", np.zeros((1, 1, 1, 1))), "layer5.0"),
        (lambda s: s.__setitem__("head.weight", np.zeros(1)), "'head.weight'"),
        (
            lambda s: s.__setitem__("layer1.0.conv2.weight", np.zeros((64, 64, 1, 1))),
            "'layer1.0.conv2.weight'",
        ),
    ],
)
def test_from_torchvision_rejects_bad_state_dicts(edit, message):
    state = random_state_dict(torchvision_shapes())
    edit(state)
    with pytest.raises(ValueError, match=message):
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
        # Heads, DTP/TSA and non-local blocks have no ImageNet counterpart: left as they were.
        if key[1] != "backbone" or any(part.endswith("_nonlocal") for part in key):
            np.testing.assert_array_equal(value, 0.25)
    if name == "nl3d":
        taps = np.asarray(backbone["layer2_0"]["conv2_temporal"]["kernel"])
        assert taps.shape == (3, 1, 1, 16, 16)
        for t in range(3):
            np.testing.assert_allclose(taps[t, 0, 0], np.eye(16) / 3, atol=1e-7)


def test_load_into_names_the_key_on_shape_mismatch(tmp_path):
    config = _tiny_config("gltr")
    variables = _zeros_like(_abstract_init(models.build_model(config, num_classes=5)))
    path = tmp_path / "wide.npz"
    np.savez(path, **random_state_dict(torchvision_shapes((1, 1, 1, 1), width=16)))
    with pytest.raises(ValueError, match=r"wide\.npz: key 'conv1\.weight' has shape"):
        pretrained.load_into(variables, str(path), config)


def test_load_into_rejects_unreadable_file(tmp_path):
    config = _tiny_config("gltr")
    path = tmp_path / "broken.npz"
    path.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="config.model.pretrained="):
        pretrained.load_into({}, str(path), config)
