"""Inflation is exact: on a temporally constant clip NL3D's backbone equals the 2D ResNet per frame.

Tiny backbone (1, 1, 1, 1) blocks, width 8, with a temporal conv in every block (4 on any path,
kernel 3) and non-local blocks after res3 and res4 block 0, all at init (identity).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from configs.default import get_config
from vreid_jax.models import registry, resnet

T = 10  # 4 temporal convs of kernel 3: with zero padding frames 4 and 5 are away from both borders.


def _video_backbone(padding, init):
    config = get_config().model
    config.update(
        stage_sizes=(1, 1, 1, 1),
        width=8,
        temporal_padding=padding,
        temporal_init=init,
        nonlocal_blocks=((), (0,), (0,), ()),
    )
    return registry.build_backbone(config, video=True)


def _features(padding, init):
    video = _video_backbone(padding, init)
    frame = np.random.default_rng(0).normal(size=(2, 1, 64, 32, 3)).astype(np.float32)
    clip = np.repeat(frame, T, axis=1)
    variables = jax.jit(lambda c: video.init(jax.random.key(0), c, train=False))(clip)
    # Non-trivial running statistics, so BN is part of what must agree.
    rng = np.random.default_rng(1)
    variables["batch_stats"] = jax.tree_util.tree_map_with_path(
        lambda path, s: (
            s * rng.uniform(0.5, 1.5, s.shape).astype(np.float32)
            if path[-1].key == "var"
            else s + rng.normal(0.0, 0.05, s.shape).astype(np.float32)
        ),
        variables["batch_stats"],
    )
    # Forwards are jitted: op by op, they take many seconds.
    got = jax.jit(lambda v, c: video.apply(v, c, train=False))(variables, clip)

    # The 2D network: the same variables minus the temporal convs and non-local blocks.
    flat = traverse_util.flatten_dict(variables)
    flat_2d = {
        k: v
        for k, v in flat.items()
        if not any(p == "conv2_temporal" or p.endswith("_nonlocal") for p in k)
    }
    assert len(flat_2d) < len(flat)
    two_d = resnet.ResNet(stage_sizes=(1, 1, 1, 1), width=8, last_stride=video.last_stride)
    want = jax.jit(lambda v, x: two_d.apply(v, x, train=False))(
        traverse_util.unflatten_dict(flat_2d), frame[:, 0]
    )
    assert np.mean(want > 0) > 0.2  # a live network, not ReLUs clamped to zero
    return np.asarray(got), np.asarray(want)


def _assert_frames_equal(got, want, frames):
    for t in frames:
        np.testing.assert_allclose(got[:, t], want, rtol=1e-4, atol=1e-5, err_msg=f"frame {t}")


def test_inflate_with_edge_padding_is_exact_on_every_frame():
    got, want = _features("edge", "inflate")
    assert got.shape == (2, T, 4, 2, 256)  # last stride 1: 64x32 / 16
    _assert_frames_equal(got, want, range(T))


def test_inflate_with_zero_padding_is_exact_away_from_the_borders():
    got, want = _features("zeros", "inflate")
    _assert_frames_equal(got, want, (4, 5))
    # Border frames see (t-1)/t of the signal per temporal conv (I3D's behaviour): not equal.
    with pytest.raises(AssertionError):
        _assert_frames_equal(got, want, (0,))


def test_center_init_is_exact_on_every_frame_with_zero_padding():
    got, want = _features("zeros", "center")
    _assert_frames_equal(got, want, range(T))


def test_nonconstant_clip_mixes_frames():
    """The temporal convs are real: a frame's features depend on its neighbours."""
    video = _video_backbone("zeros", "inflate")
    clip = np.random.default_rng(0).normal(size=(1, 4, 64, 32, 3)).astype(np.float32)
    variables = jax.jit(lambda c: video.init(jax.random.key(0), c, train=False))(clip)
    apply = jax.jit(lambda c: video.apply(variables, c, train=False))
    base, changed = apply(clip), apply(_zero_first(clip))
    assert not jnp.allclose(base[:, 1], changed[:, 1])


def _zero_first(clip):
    out = clip.copy()
    out[:, 0] = 0.0
    return out
