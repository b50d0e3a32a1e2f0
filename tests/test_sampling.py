"""PK, temporal and evaluation-chunk samplers (pure numpy; no TensorFlow)."""

import collections

import numpy as np
import pytest

from vreid_jax.data import sampling

# 11 identities; 3 of them have fewer than K=4 tracklets (as 45 MARS identities do).
COUNTS = np.array([6, 1, 4, 9, 2, 5, 3, 4, 7, 4, 12])
row_labels = np.repeat(np.arange(len(COUNTS)), COUNTS)


def _sampler(labels=row_labels, process_index=0, process_count=1, **kw):
    kw = {"num_ids_per_batch": 4, "num_instances": 4, "seed": 3, **kw}
    return sampling.PKSampler(
        labels, COUNTS, process_index=process_index, process_count=process_count, **kw
    )


@pytest.mark.parametrize("epoch", ["identity", "tracklet"])
def test_batch_is_p_identities_times_k(epoch):
    sampler = _sampler(epoch=epoch)
    for step in range(12):
        rows, lanes, instances = sampler.batch(step)
        assert len(rows) == 4 * 4
        batch_labels = row_labels[rows].reshape(4, 4)
        assert (batch_labels == batch_labels[:, :1]).all()  # K clips of each identity
        assert len(set(batch_labels[:, 0])) == 4  # P distinct identities
        assert (
            batch_labels[:, 0] % 4 == np.arange(4)
        ).all()  # identity `label` rides lane label % P
        np.testing.assert_array_equal(lanes, np.repeat(np.arange(4), 4))
        np.testing.assert_array_equal(instances, np.tile(np.arange(4), 4))


def test_identity_epoch_visits_every_identity_once():
    sampler = _sampler()
    assert sampler.steps_per_epoch == 3  # ceil(11 / 4)
    for epoch in range(3):
        seen = collections.Counter()
        for t in range(3):
            rows, _, _ = sampler.batch(epoch * 3 + t)
            seen.update(row_labels[rows[::4]].tolist())
        assert set(seen) == set(range(11))
        # 12 slots for 11 identities: lane 3 (labels 3, 7) is one short and repeats one identity.
        assert sorted(seen.values()) == [1] * 10 + [2]
        assert max(seen, key=seen.get) in (3, 7)


def test_replacement_only_where_needed():
    sampler = _sampler()
    for step in range(30):
        rows, _, _ = sampler.batch(step)
        for group in rows.reshape(4, 4):
            label = row_labels[group[0]]
            if COUNTS[label] >= 4:
                assert len(set(group)) == 4
            else:  # every tracklet of the identity once, the rest repeated
                assert set(group) == set(np.flatnonzero(row_labels == label))


def test_deterministic_per_seed_and_step():
    first, second = _sampler(), _sampler()
    for step in (7, 0, 3, 100):  # any order: no state carried between steps
        np.testing.assert_array_equal(first.batch(step)[0], second.batch(step)[0])
    assert not np.array_equal(_sampler(seed=4).batch(0)[0], first.batch(0)[0])
    assert not all(np.array_equal(first.batch(0)[0], first.batch(s)[0]) for s in range(1, 4))


@pytest.mark.parametrize("epoch", ["identity", "tracklet"])
def test_two_processes_split_the_single_process_batch(epoch):
    single = _sampler(epoch=epoch)
    parts = []
    for p in range(2):
        mine = np.flatnonzero(row_labels % 2 == p)  # this process's identity slice of the index
        sampler = _sampler(row_labels[mine], process_index=p, process_count=2, epoch=epoch)
        parts.append(sampler)
        assert list(sampler.local_lanes) == [p, p + 2]
    for step in range(10):
        rows, lanes, instances = single.batch(step)
        union = {}
        for p, sampler in enumerate(parts):
            local_rows, local_lanes, local_instances = sampler.batch(step)
            global_rows = np.flatnonzero(row_labels % 2 == p)[local_rows]
            assert (row_labels[global_rows] % 2 == p).all()
            union.update(
                zip(zip(local_lanes, local_instances, strict=True), global_rows, strict=True)
            )
        assert union == dict(zip(zip(lanes, instances, strict=True), rows, strict=True))


def test_tracklet_epoch_covers_tracklets():
    sampler = _sampler(epoch="tracklet")
    groups = np.maximum(1, COUNTS // 4)
    assert sampler.steps_per_epoch == groups.sum() // 4
    seen = collections.Counter()
    for step in range(sampler.steps_per_epoch * 20):
        rows, _, _ = sampler.batch(step)
        seen.update(row_labels[rows[::4]].tolist())
    # Within a lane, identities are drawn in proportion to their groups of K tracklets, as in
    # torchreid's sampler: lane 2 holds labels 2, 6, 10 with 1, 1 and 3 groups.
    assert 2 * seen[2] < seen[10] < 4 * seen[2] and 2 * seen[6] < seen[10] < 4 * seen[6]
    assert set(seen) == set(range(11))


def test_one_tracklet_per_slot_covers_every_tracklet():
    """K = 1 (GLTR's official batches of random tracklets): each epoch is a pass over the training
    tracklets, one tracklet per batch slot."""
    sampler = _sampler(epoch="tracklet", num_instances=1)
    assert sampler.steps_per_epoch == COUNTS.sum() // 4
    seen = collections.Counter()
    for step in range(sampler.steps_per_epoch):
        rows, _, _ = sampler.batch(step)
        assert len(rows) == 4 and len(set(row_labels[rows])) == 4  # Distinct identities.
        seen.update(rows.tolist())
    assert max(seen.values()) <= 2 and len(seen) >= 0.75 * len(row_labels)


def test_sampler_errors_name_the_config_key():
    with pytest.raises(ValueError, match=r"config\.input\.num_ids_per_batch=12 exceeds the 11"):
        _sampler(num_ids_per_batch=12)
    with pytest.raises(ValueError, match="not this process's identity slice"):
        _sampler(row_labels, process_index=0, process_count=2)


def test_restricted_window_hand_checked():
    class Fixed:  # a generator stub that always draws the lowest allowed value
        def integers(self, low, high=None):
            return np.asarray(low)

    # Long tracklet: window starts at 0; one frame per chunk of 8 -> the first of each chunk.
    np.testing.assert_array_equal(
        sampling.restricted_window(100, 8, Fixed(), 64), np.arange(0, 64, 8)
    )
    # Short tracklet (5 < 64): the window loops 0..4,0..4,...; chunk starts 0,8,...,56 modulo 5.
    np.testing.assert_array_equal(
        sampling.restricted_window(5, 8, Fixed(), 64), np.arange(0, 64, 8) % 5
    )
    generator = np.random.default_rng(0)
    for length in (3, 20, 64, 65, 300):
        for _ in range(20):
            frames = sampling.restricted_window(length, 8, generator, 64)
            assert frames.shape == (8,) and (frames >= 0).all() and (frames < length).all()
            if length >= 64:  # one frame per chunk of 8 of one 64-frame window: gaps of 1..15
                assert frames[-1] - frames[0] < 64
                assert ((np.diff(frames) >= 1) & (np.diff(frames) <= 15)).all()


def test_restricted_hand_checked():
    generator = np.random.default_rng(1)
    for _ in range(20):
        frames = sampling.restricted(24, 8, generator)
        np.testing.assert_array_equal(frames // 3, np.arange(8))  # one per chunk of 3
    frames = sampling.restricted(5, 8, generator)  # shorter than the clip
    assert set(frames) == set(range(5)) and (np.diff(frames) >= 0).all()
    np.testing.assert_array_equal(sampling.restricted(8, 8, generator), np.arange(8))


def test_consecutive_and_evenly_hand_checked():
    generator = np.random.default_rng(2)
    for _ in range(20):
        frames = sampling.consecutive(20, 8, generator)
        assert frames[0] <= 12
        np.testing.assert_array_equal(frames, frames[0] + np.arange(8))
    np.testing.assert_array_equal(sampling.consecutive(3, 8, generator), [0, 1, 2, 0, 1, 2, 0, 1])
    np.testing.assert_array_equal(sampling.evenly(20, 8), [0, 2, 4, 6, 8, 10, 12, 14])
    np.testing.assert_array_equal(sampling.evenly(5, 8), [0, 1, 2, 3, 4, 4, 4, 4])
    np.testing.assert_array_equal(sampling.evenly(64, 8), np.arange(0, 64, 8))


def test_clip_chunks_hand_checked():
    tracklets, frames = sampling.clip_chunks(np.array([10, 4, 1]), 4)
    np.testing.assert_array_equal(tracklets, [0, 0, 0, 1, 2])
    np.testing.assert_array_equal(
        frames, [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 8, 9], [0, 1, 2, 3], [0, 0, 0, 0]]
    )


def test_frame_chunks_and_process_items():
    tracklets, positions = sampling.frame_chunks(np.array([3, 1, 2]))
    np.testing.assert_array_equal(tracklets, [0, 0, 0, 1, 2, 2])
    np.testing.assert_array_equal(positions, [0, 1, 2, 0, 0, 1])
    # 7 items, batches of 2 on 2 processes: 2 global steps of 4; process 1 gets [2 3] and [6 pad].
    parts = [sampling.process_items(7, 2, p, 2) for p in range(2)]
    assert [n for _, n in parts] == [2, 2]
    np.testing.assert_array_equal(parts[0][0], [0, 1, 4, 5])
    np.testing.assert_array_equal(parts[1][0], [2, 3, 6, -1])
    items, num_batches = sampling.process_items(0, 4, 0, 1)
    assert num_batches == 1 and (items == -1).all()
