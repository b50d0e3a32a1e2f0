"""tf.data training and evaluation pipelines on an in-memory index of coded frames."""

import importlib.util

import jax
import numpy as np
import pytest

from vreid_jax import parallel
from vreid_jax.data import fake, pipeline

H, W, T = 32, 16, 4


@pytest.fixture(scope="module")
def input_config(repo_root):
    spec = importlib.util.spec_from_file_location("default", repo_root / "configs" / "default.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    cfg = module.get_config().input
    cfg.update(
        height=H,
        width=W,
        num_ids_per_batch=4,
        num_instances=2,
        clip_len=T,
        window=8,
        flip=False,
        pad=0,
    )
    cfg.num_parallel_calls = 2
    return cfg


@pytest.fixture(scope="module")
def train_index():
    # 6 identities, one with a single tracklet; lengths 3..14 (some shorter than the clip).
    counts = [3, 1, 2, 4, 2, 3]
    return fake.make_index(counts, 3 + np.arange(sum(counts)) % 12, height=H, width=W)


def _codes(pixels):
    """(row, frame) codes of every clip frame: red = tracklet row, green = frame number."""
    pixels = np.asarray(pixels).astype(int)
    return pixels[..., 0, 0, 0], pixels[..., 0, 0, 1]


def _take(iterator, n):
    return [next(iterator) for _ in range(n)]


def test_train_batch_contents(train_index, input_config):
    batches = _take(pipeline.train_batches(train_index, input_config, seed=0, start_step=0), 3)
    for batch in batches:
        assert batch["clips"].shape == (8, T, H, W, 3) and batch["clips"].dtype == np.uint8
        assert batch["labels"].dtype == np.int32 and batch["pids"].dtype == np.int64
        labels = batch["labels"].reshape(4, 2)
        assert (labels == labels[:, :1]).all() and len(set(labels[:, 0])) == 4
        rows, frames = _codes(batch["clips"])
        assert (rows == rows[:, :1]).all()  # every frame of a clip from one tracklet
        np.testing.assert_array_equal(train_index.labels[rows[:, 0]], batch["labels"])
        np.testing.assert_array_equal(train_index.pids[rows[:, 0]], batch["pids"])
        assert (frames < train_index.lengths[rows[:, 0]][:, None]).all()


def test_resume_sees_the_same_batches(train_index, input_config):
    full = _take(pipeline.train_batches(train_index, input_config, seed=5, start_step=0), 4)
    resumed = _take(pipeline.train_batches(train_index, input_config, seed=5, start_step=2), 2)
    for a, b in zip(full[2:], resumed, strict=True):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
    other = next(pipeline.train_batches(train_index, input_config, seed=6, start_step=0))
    assert not np.array_equal(other["clips"], full[0]["clips"])


def test_two_processes_make_the_single_process_batch(train_index, input_config):
    cfg = input_config.copy_and_resolve_references()
    cfg.update(flip=True, pad=2, random_erasing=0.5)
    single = _take(pipeline.train_batches(train_index, cfg, seed=1, start_step=3), 2)
    local = []
    for p in range(2):
        mine = train_index.select(np.flatnonzero(train_index.labels % 2 == p))
        batches = pipeline.train_batches(
            mine, cfg, seed=1, start_step=3, process_index=p, process_count=2
        )
        local.append(_take(batches, 2))
    for step in range(2):
        # Process p fills lanes p, p + 2 (K = 2 clips each); the single process fills lanes 0..3.
        lanes = {}
        for p in range(2):
            for i, lane in enumerate((p, p + 2)):
                lanes[lane] = {k: v[2 * i : 2 * i + 2] for k, v in local[p][step].items()}
        for key, value in single[step].items():
            np.testing.assert_array_equal(np.concatenate([lanes[j][key] for j in range(4)]), value)


def test_train_errors_name_config_keys(train_index, input_config):
    too_many = input_config.copy_and_resolve_references()
    too_many.num_ids_per_batch = 8
    with pytest.raises(ValueError, match=r"config\.input\.num_ids_per_batch=8 exceeds the 6"):
        pipeline.train_batches(train_index, too_many, seed=0, start_step=0)
    clamped = pipeline.train_batches(
        train_index, too_many, seed=0, start_step=0, shrink_ids_to_dataset=True
    )
    assert next(clamped)["labels"].shape == (12,)
    too_tall = input_config.copy_and_resolve_references()
    too_tall.height = 64
    with pytest.raises(ValueError, match=r"config\.input\.height=64 exceeds .* 32x16"):
        pipeline.train_batches(train_index, too_tall, seed=0, start_step=0)
    empty = train_index.select([])
    with pytest.raises(ValueError, match=r"empty.*config\.data\.name"):
        pipeline.train_batches(empty, input_config, seed=0, start_step=0)


@pytest.fixture(scope="module")
def eval_index():
    return fake.make_index([2, 1, 2], [10, 4, 1, 7, 5], height=H, width=W, train=False)


def _gather(make, process_count=2):
    """Runs every process and concatenates their batches step by step into global batches."""
    runs = [make(p, process_count) for p in range(process_count)]
    assert len({n for _, n in runs}) == 1  # every process runs the same number of batches
    num_batches = runs[0][1]
    local = [list(iterator) for iterator, _ in runs]
    assert all(len(batches) == num_batches for batches in local)
    return [
        {k: np.concatenate([local[p][b][k] for p in range(process_count)]) for k in local[0][b]}
        for b in range(num_batches)
    ]


def test_eval_clips_cover_every_frame_once(eval_index, input_config):
    batches = _gather(
        lambda p, n: pipeline.eval_clip_batches(
            eval_index, input_config, clip_len=T, batch_size=3, process_index=p, process_count=n
        )
    )
    clips = np.concatenate([b["clips"] for b in batches])
    tracklet = np.concatenate([b["tracklet"] for b in batches])
    mask = np.concatenate([b["mask"] for b in batches])
    assert all(
        b["clips"].shape == (6, T, H, W, 3) and b["clips"].dtype == np.uint8 for b in batches
    )
    # 10 -> 3 clips, 4 -> 1, 1 -> 1, 7 -> 2, 5 -> 2: 9 clips padded to 2 steps x 2 processes x 3.
    assert len(mask) == 12 and mask.sum() == 9 and not mask[9:].any()
    assert (tracklet[~mask] == -1).all() and (clips[~mask] == clips[~mask][0, 0, 0, 0]).all()
    rows, frames = _codes(clips[mask])
    np.testing.assert_array_equal(rows[:, 0], tracklet[mask])
    for i, length in enumerate(eval_index.lengths):
        mine = frames[tracklet[mask] == i]
        # The clips in order hold frames 0..L-1, then the last clip loops its own frames.
        np.testing.assert_array_equal(mine.reshape(-1)[:length], np.arange(length))
        last = mine[-1]
        tail = np.arange(len(mine) * T - T, length)
        np.testing.assert_array_equal(last, tail[np.arange(T) % len(tail)])


def test_eval_frames_cover_every_frame_once(eval_index, input_config):
    batches = _gather(
        lambda p, n: pipeline.eval_frame_batches(
            eval_index, input_config, batch_size=5, process_index=p, process_count=n
        )
    )
    assert all(
        b["frames"].shape == (10, H, W, 3) and b["frames"].dtype == np.uint8 for b in batches
    )
    frames = np.concatenate([b["frames"] for b in batches])
    tracklet, position, mask = (
        np.concatenate([b[k] for b in batches]) for k in ("tracklet", "position", "mask")
    )
    assert mask.sum() == eval_index.num_frames == 27 and len(mask) == 30 and not mask[27:].any()
    rows, numbers = _codes(frames[mask])
    np.testing.assert_array_equal(rows, tracklet[mask])
    np.testing.assert_array_equal(numbers, position[mask])
    expected = [(i, f) for i, n in enumerate(eval_index.lengths) for f in range(n)]
    assert list(zip(tracklet[mask], position[mask], strict=True)) == expected


def test_eval_errors(eval_index, input_config):
    too_wide = input_config.copy_and_resolve_references()
    too_wide.width = 20
    with pytest.raises(ValueError, match=r"config\.input\.width=20 exceeds .* 32x16"):
        pipeline.eval_frame_batches(eval_index, too_wide, batch_size=4)
    with pytest.raises(ValueError, match="split is empty"):
        pipeline.eval_clip_batches(eval_index.select([]), input_config, clip_len=T, batch_size=4)


def test_batches_become_global_arrays_on_the_data_mesh(train_index, input_config):
    mesh = parallel.make_mesh()
    batch = next(pipeline.train_batches(train_index, input_config, seed=0, start_step=0))
    global_batch = parallel.host_to_global(batch, mesh)
    assert global_batch["clips"].shape == (8, T, H, W, 3)
    assert global_batch["clips"].sharding == parallel.data_sharding(mesh)
    assert len(global_batch["clips"].addressable_shards) == jax.device_count() == 4
    np.testing.assert_array_equal(np.asarray(global_batch["labels"]), batch["labels"])
