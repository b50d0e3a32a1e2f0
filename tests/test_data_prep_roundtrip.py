"""Round trip for every layout: synthetic raw tree -> build -> read back == generator ground truth."""

import os

import numpy as np
import pytest

from data_prep import build, names, reader, synthetic

SIZE = dict(num_ids=6, tracklets_per_id=3, min_len=3, max_len=7, height=32, width=16)


@pytest.fixture(scope="module", params=names.NAMES)
def built(request, tmp_path_factory):
    """(layout, raw_dir, data_dir, ground truth) of a small built synthetic dataset."""
    layout = request.param
    root = tmp_path_factory.mktemp(layout)
    raw, data_dir = str(root / "raw"), str(root / "tfds")
    truth = synthetic.generate(layout, raw, seed=3, **SIZE)
    build.build(layout, raw, data_dir)
    return layout, raw, data_dir, truth


def _expected(truth, split, split_index):
    """Ground-truth tracklets of a read split, with their expected labels, in key order."""
    if not truth["splits"]:
        rows = [t for t in truth["tracklets"] if t["split"] == split]
        train_pids = sorted({t["pid"] for t in truth["tracklets"] if t["split"] == "train"})
    else:
        definition = truth["splits"][split_index]
        train_pids = definition["train"]
        if split == "train":
            rows = [t for t in truth["tracklets"] if t["pid"] in train_pids]
        else:
            camid = 0 if split == "query" else 1
            rows = [
                t
                for t in truth["tracklets"]
                if t["pid"] in definition["test"] and t["camid"] == camid
            ]
    labels = [train_pids.index(t["pid"]) if split == "train" else -1 for t in rows]
    return sorted(zip(rows, labels, strict=True), key=lambda x: x[0]["key"])


@pytest.mark.parametrize("split", reader.SPLITS)
def test_read_back_equals_ground_truth(built, split):
    layout, raw, data_dir, truth = built
    split_indices = (0, 7) if truth["splits"] else (0,)
    for split_index in split_indices:
        expected = _expected(truth, split, split_index)
        got = list(
            reader.read_split(layout, data_dir, split, split_index=split_index).as_numpy_iterator()
        )
        assert len(got) == len(expected) > 0
        for ex, (t, label) in zip(got, expected, strict=True):
            assert ex["tracklet_key"].decode() == t["key"]
            assert (ex["pid"], ex["camid"], ex["label"]) == (t["pid"], t["camid"], label)
            assert (ex["is_junk"], ex["is_distractor"]) == (t["is_junk"], t["is_distractor"])
            assert ex["frame_numbers"].tolist() == t["frame_numbers"]
            assert ex["num_frames"] == len(t["frame_files"])
            for data, rel in zip(ex["frames"], t["frame_files"], strict=True):
                with open(os.path.join(raw, rel), "rb") as f:
                    assert data == f.read(), rel  # original bytes, never re-encoded


def test_summary_matches_ground_truth(built):
    layout, _, data_dir, truth = built
    for row in reader.summary(layout, data_dir, split_index=0):
        expected = [t for t, _ in _expected(truth, row["split"], 0)]
        lengths = [len(t["frame_numbers"]) for t in expected]
        assert row["tracklets"] == len(expected)
        assert row["frames"] == sum(lengths)
        assert (row["min_len"], row["max_len"]) == (min(lengths), max(lengths))
        assert row["ids"] == len({t["pid"] for t in expected if not t["is_junk"]})
        assert row["junk"] == sum(t["is_junk"] for t in expected)
        assert row["distractors"] == sum(t["is_distractor"] for t in expected)


def test_rebuild_is_a_noop_unless_overwrite(built):
    layout, raw, data_dir, _ = built
    info = os.path.join(build.dataset_dir(layout, data_dir), "dataset_info.json")
    before = os.stat(info).st_mtime_ns
    assert build.build(layout, raw, data_dir) == build.dataset_dir(layout, data_dir)
    assert os.stat(info).st_mtime_ns == before
    if layout == "ilidsvid":  # one overwrite is enough to show it rebuilds
        build.build(layout, raw, data_dir, overwrite=True)
        assert os.stat(info).st_mtime_ns != before
        assert reader.is_built(layout, data_dir)
        # Nothing temporary left behind: the dataset and the released build lock.
        assert sorted(os.listdir(data_dir)) == [f".{layout}.build.lock", layout]


def test_resize_writes_frames_of_the_requested_size(tmp_path):
    import tensorflow as tf

    raw, data_dir = str(tmp_path / "raw"), str(tmp_path / "tfds")
    synthetic.generate("dukev", raw, seed=1, **{**SIZE, "num_ids": 2, "tracklets_per_id": 2})
    build.build("dukev", raw, data_dir, resize=(24, 12))
    ex = next(reader.read_split("dukev", data_dir, "train").as_numpy_iterator())
    shapes = {tf.io.decode_jpeg(f).shape for f in ex["frames"]}
    assert shapes == {(24, 12, 3)}
    assert reader.build_metadata("dukev", data_dir)["resize"] == [24, 12]


def test_unknown_split_and_unbuilt_dataset_fail_clearly(built, tmp_path):
    layout, _, data_dir, truth = built
    with pytest.raises(ValueError, match="Unknown split"):
        reader.read_split(layout, data_dir, "val")
    with pytest.raises(ValueError, match="not built"):
        reader.read_split(layout, str(tmp_path), "train")
    if truth["splits"]:
        with pytest.raises(ValueError, match="split_index 10"):
            reader.summary(layout, data_dir, split_index=10)


def test_frames_decode_to_the_rendered_size(built):
    import tensorflow as tf

    layout, _, data_dir, _ = built
    ex = next(reader.read_split(layout, data_dir, "query").as_numpy_iterator())
    frame = tf.io.decode_image(ex["frames"][0]).numpy()
    if layout in ("dukev", "lsvid"):  # large-crop layouts: 1-1.6x the requested size
        assert 32 <= frame.shape[0] <= 52
    else:
        assert frame.shape == (32, 16, 3)
    assert np.ptp(frame) > 0
