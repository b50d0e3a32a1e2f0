"""Checkpoints: round trip, latest-N plus best-by-mAP retention, fallback, shape mismatch."""

import os

import jax.numpy as jnp
import numpy as np
import pytest

from vreid_jax import checkpoint


def _state(width=5, value=1.0):
    return {"step": jnp.asarray(3), "params": {"w": jnp.full((4, width), float(value))}}


def _abstract(width=5):
    return {"step": np.zeros((), np.int32), "params": {"w": np.zeros((4, width), np.float32)}}


def test_round_trip_and_retention(tmp_path):
    ckpt = checkpoint.Checkpointer(str(tmp_path), keep=2)
    for step, m_ap in [(1, None), (2, 0.7), (3, 0.4), (4, None), (5, None)]:
        metrics = None if m_ap is None else {"mAP": m_ap}
        ckpt.save(step, _state(value=step), {"model": "tiny"}, evaluation=metrics)
    ckpt.wait()
    # The latest two, plus step 2: the best mAP.
    assert ckpt.all_steps() == [2, 4, 5]
    assert ckpt.best_step() == 2
    state, meta, step = ckpt.restore(_abstract())
    assert step == 5 and meta["model"] == "tiny"
    np.testing.assert_array_equal(state["params"]["w"], np.full((4, 5), 5.0))
    state, _, _ = ckpt.restore(_abstract(), step=2)
    np.testing.assert_array_equal(state["params"]["w"], np.full((4, 5), 2.0))
    ckpt.close()
    # The best step is known from the checkpoints alone, in a later process too.
    with checkpoint.Checkpointer(str(tmp_path), keep=2) as reopened:
        assert reopened.best_step() == 2
        reopened.save(6, _state(value=6), {"model": "tiny"}, evaluation={"mAP": 0.9, "rank1": 1})
        reopened.wait()
        assert reopened.best_step() == 6 and reopened.all_steps() == [5, 6]


def test_without_an_evaluation_there_is_no_best_step(tmp_path):
    with checkpoint.Checkpointer(str(tmp_path)) as ckpt:
        ckpt.save(1, _state(), {})
        ckpt.wait()
        assert ckpt.latest_step() == 1 and ckpt.best_step() is None


def test_unreadable_newest_falls_back_to_previous(tmp_path):
    ckpt = checkpoint.Checkpointer(str(tmp_path), keep=3)
    for step in (1, 2):
        ckpt.save(step, _state(value=step), {})
    ckpt.wait()
    for root, _, names in os.walk(tmp_path / "2" / "state"):
        for name in names:
            with open(os.path.join(root, name), "wb") as f:
                f.write(b"torn write")
    state, _, step = ckpt.restore(_abstract())
    assert step == 1
    np.testing.assert_array_equal(state["params"]["w"], np.ones((4, 5)))


def test_other_model_shapes_are_a_clear_error(tmp_path):
    ckpt = checkpoint.Checkpointer(str(tmp_path))
    ckpt.save(1, _state(width=5), {})
    ckpt.wait()
    with pytest.raises(checkpoint.CheckpointMismatchError, match=r"params/w.*\(4, 5\)"):
        ckpt.restore(_abstract(width=6))


def test_nothing_to_restore(tmp_path):
    assert checkpoint.Checkpointer(str(tmp_path)).restore(_abstract()) is None
