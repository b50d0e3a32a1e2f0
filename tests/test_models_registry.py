"""build_model: config validation, block positions, dtypes, train/eval behaviour, full-size counts."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs.default import get_config
from vreid_jax import models
from vreid_jax.errors import UserError
from vreid_jax.models import layers, registry

NUM_CLASSES = 625


def _config(name, **overrides):
    config = get_config().model
    config.update(name=name, stage_sizes=(1, 1, 1, 1), width=8, **overrides)
    return config


def _abstract(module, clips_shape=(2, 4, 64, 32, 3)):
    clips = jax.ShapeDtypeStruct(clips_shape, jnp.float32)
    keys = {"params": jax.random.key(0), "dropout": jax.random.key(1)}
    return jax.eval_shape(lambda c: module.init(keys, c, train=False), clips)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(name="c3d"), "config.model.name='c3d'"),
        (dict(depth=35, stage_sizes=()), "config.model.depth=35"),
        (dict(stage_sizes=(1, 1, 1)), "config.model.stage_sizes"),
        (dict(temporal_kernel=2), "config.model.temporal_kernel"),
        (dict(temporal_padding="reflect"), "config.model.temporal_padding"),
        (dict(temporal_init="zeros"), "config.model.temporal_init"),
        (dict(temporal_stages=(4,)), "config.model.temporal_stages"),
        (dict(nonlocal_blocks=((), (-1,), (), ())), "config.model.nonlocal_blocks"),
        (dict(nonlocal_blocks=((), (1,))), "config.model.nonlocal_blocks"),
        (dict(dtype="float16"), "config.model.dtype"),
        (dict(last_stride=3), "config.model.last_stride"),
        (dict(width=0), "config.model.width"),
        (dict(dropout=1.0), "config.model.dropout"),
        (dict(fast_cpu_ops="yes"), "config.model.fast_cpu_ops='yes'"),
        (dict(max_pool_ties="last"), "config.model.max_pool_ties='last'"),
    ],
)
def test_bad_config_raises_naming_the_key(overrides, message):
    config = _config("nl3d")
    config.update(overrides)
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        registry.check_config(config)


def test_bad_gltr_dilations_raise():
    with pytest.raises(UserError, match="config.model.gltr_dilations"):
        registry.check_config(_config("gltr", gltr_dilations=(1, 1, 2)))


def test_block_positions_are_clipped_to_short_stages():
    resolved = registry.resolve_blocks(
        "nonlocal_blocks", ((), (1, 3), (1, 3, 5), ()), (1, 2, 6, 1), empty_means_all=False
    )
    assert resolved == ((), (1,), (1, 3, 5), ())
    assert registry.resolve_blocks("temporal_blocks", ((), (0,), (), ()), (2, 2, 2, 2), True) == (
        (0, 1),
        (0,),
        (0, 1),
        (0, 1),
    )


def test_temporal_stages_and_nonlocal_positions_shape_the_tree():
    config = _config("nl3d", temporal_stages=(1, 2), nonlocal_blocks=((), (0,), (), ()))
    backbone = _abstract(models.build_model(config, NUM_CLASSES))["params"]["backbone"]
    assert "conv2_temporal" not in backbone["layer1_0"]
    assert backbone["layer2_0"]["conv2_temporal"]["kernel"].shape == (3, 1, 1, 16, 16)
    assert "conv2_temporal" not in backbone["layer4_0"]
    assert sorted(k for k in backbone if k.endswith("_nonlocal")) == ["layer2_0_nonlocal"]


@pytest.mark.parametrize("name", ["nl3d", "gltr"])
def test_bfloat16_compute_keeps_float32_parameters_and_outputs(name):
    module = models.build_model(_config(name, dtype="bfloat16"), NUM_CLASSES)
    variables = _abstract(module)
    assert {x.dtype for x in jax.tree.leaves(variables)} == {jnp.dtype(jnp.float32)}
    clips = jax.ShapeDtypeStruct((2, 4, 64, 32, 3), jnp.float32)
    features, logits = jax.eval_shape(
        lambda v, c: module.apply(v, c, train=False), variables, clips
    )
    assert features.dtype == logits.dtype == jnp.float32
    assert logits.shape == (2, NUM_CLASSES)
    assert features.shape == (2, 512)


@pytest.mark.parametrize("name", ["nl3d", "gltr"])
def test_train_and_eval_differ_only_through_dropout_and_batch_norm(name):
    module = models.build_model(_config(name), 5)
    clips = np.random.default_rng(0).normal(size=(4, 2, 64, 32, 3)).astype(np.float32)
    keys = {"params": jax.random.key(0), "dropout": jax.random.key(1)}
    variables = jax.jit(lambda c: module.init(keys, c, train=False))(clips)

    @jax.jit
    def train_apply(key):
        return module.apply(
            variables, clips, train=True, rngs={"dropout": key}, mutable=["batch_stats"]
        )

    (f1, l1), updates = train_apply(jax.random.key(2))
    (f2, l2), _ = train_apply(jax.random.key(3))
    np.testing.assert_array_equal(f1, f2)  # the retrieval feature never sees dropout
    assert not np.allclose(l1, l2)  # the classifier does
    changed = jax.tree.map(
        lambda a, b: bool(jnp.any(a != b)), variables["batch_stats"], updates["batch_stats"]
    )
    assert all(jax.tree.leaves(changed))  # every BN updated its running statistics

    # No rng needed: deterministic. (Jitted, as every forward here: op by op takes many seconds.)
    f_eval, l_eval = jax.jit(lambda v: module.apply(v, clips, train=False))(variables)
    assert not np.allclose(f_eval, f1)  # running vs batch statistics


def _nonlocal_params(c):
    inner = c // 2
    return 3 * (c * inner + inner) + (inner * c + c) + 2 * c


def test_full_size_parameter_counts():
    resnet50_trunk = 25_557_032 - (2048 * 1000 + 1000)  # torchvision minus its classifier
    config = get_config().model
    nl3d_params = layers.count_params(
        _abstract(models.build_model(config, NUM_CLASSES), (1, 8, 256, 128, 3))["params"]
    )
    temporal = sum(n * 3 * w * w for n, w in zip((3, 4, 6, 3), (64, 128, 256, 512), strict=True))
    nonlocal_ = 2 * _nonlocal_params(512) + 3 * _nonlocal_params(1024)
    head = 2048 * 512 + 512 + 2 * 512 + 512 * NUM_CLASSES + NUM_CLASSES
    assert nl3d_params == resnet50_trunk + temporal + nonlocal_ + head

    config.name = "gltr"
    gltr_params = layers.count_params(
        _abstract(models.build_model(config, NUM_CLASSES), (1, 4, 256, 128, 3))["params"]
    )
    frame = 2048 * 128 + 128
    dtp = 3 * 3 * 128 * 128
    tsa = _nonlocal_params(512)
    gltr_head = 2 * 512 + 512 * NUM_CLASSES + NUM_CLASSES
    assert gltr_params == resnet50_trunk + frame + dtp + tsa + gltr_head
