"""MARS protocol details on a synthetic tree in MARS's proportions (parser level, no TFRecord)."""

import os

import numpy as np
import pytest
import scipy.io

from data_prep import mars, registry, synthetic, synthetic_layouts


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    raw = str(tmp_path_factory.mktemp("mars") / "raw")
    truth = synthetic.generate(
        "mars",
        raw,
        seed=5,
        num_ids=24,
        tracklets_per_id=5,
        min_len=2,
        max_len=5,
        height=32,
        width=16,
    )
    return raw, truth


def test_info_files_follow_the_release_conventions(tree):
    raw, _ = tree
    with open(os.path.join(raw, "info", "test_name.txt"), "rb") as f:
        text = f.read()
    lines = text.split(b"\r\n")
    assert lines[-1] == b"" and b"\n" not in b"".join(lines)  # MATLAB's \r\n line ends
    assert lines[0].startswith(b"00-1C")  # sorted names: junk first, as in the release
    table = scipy.io.loadmat(os.path.join(raw, "info", "tracks_test_info.mat"))["track_test_info"]
    assert table[0, 0] == 1 and table[-1, 1] == len(lines) - 1  # 1-based, inclusive, tiling
    assert np.all(table[1:, 0] == table[:-1, 1] + 1)
    assert set(np.unique(table[:, 2]) % 2) <= {0, 1} and -1 in table[:, 2] and 0 in table[:, 2]


def test_junk_and_distractors_in_mars_proportions(tree):
    raw, truth = tree
    index = registry.parse("mars", raw)
    test = [t for t in index.tracklets if t.split != "train"]
    n_junk = sum(t.is_junk for t in test)
    n_dis = sum(t.is_distractor for t in test)
    assert n_junk == sum(t["is_junk"] for t in truth["tracklets"]) > 0
    assert n_dis == sum(t["is_distractor"] for t in truth["tracklets"]) > 0
    assert abs(n_junk / len(test) - synthetic_layouts.MARS_JUNK_FRACTION) < 0.02
    assert abs(n_dis / len(test) - synthetic_layouts.MARS_DISTRACTOR_FRACTION) < 0.02
    assert all(t.pid == -1 for t in test if t.is_junk)
    assert all(t.split == "gallery" for t in test if t.is_junk or t.is_distractor)


def test_query_is_one_tracklet_per_pid_and_camera_seen_by_two_cameras(tree):
    raw, _ = tree
    index = registry.parse("mars", raw)
    test = [t for t in index.tracklets if t.split != "train" and t.pid > 0]
    query = [t for t in test if t.split == "query"]
    cams = {}
    for t in test:
        cams.setdefault(t.pid, set()).add(t.camid)
    expected = {(p, c) for p, cs in cams.items() if len(cs) >= 2 for c in cs}
    assert sorted((t.pid, t.camid) for t in query) == sorted(expected)


def test_official_vs_torchreid_gallery(tree):
    """Official gallery = query + gallery: every query has a cross-camera match. The torchreid
    gallery (gallery only) can leave queries without one; both are composed from stored splits."""
    raw, _ = tree
    index = registry.parse("mars", raw)
    query = [t for t in index.tracklets if t.split == "query"]
    gallery = [t for t in index.tracklets if t.split == "gallery" and not t.is_junk]
    official = query + gallery

    def has_match(q, pool):
        return any(g.pid == q.pid and g.camid != q.camid for g in pool)

    assert all(has_match(q, official) for q in query)
    unmatched = sum(not has_match(q, gallery) for q in query)
    assert 0 <= unmatched < len(query)
    assert len(official) == len(query) + len(gallery)


def test_train_labels_are_ranks_of_sorted_pids(tree):
    raw, _ = tree
    index = registry.parse("mars", raw)
    train = [t for t in index.tracklets if t.split == "train"]
    pids = sorted({t.pid for t in train})
    assert pids == list(range(1, 2 * 24, 2))  # odd pids, as in the release
    assert all(t.label == pids.index(t.pid) for t in train)
    assert all(t.label == -1 for t in index.tracklets if t.split != "train")


def test_frames_are_sorted_by_number_even_when_the_name_list_is_not(tmp_path):
    raw = str(tmp_path / "raw")
    synthetic.generate(
        "mars",
        raw,
        seed=1,
        num_ids=2,
        tracklets_per_id=2,
        min_len=4,
        max_len=6,
        height=32,
        width=16,
    )
    path = os.path.join(raw, "info", "train_name.txt")
    with open(path, newline="") as f:
        names = f.read().split("\r\n")[:-1]
    start, end = scipy.io.loadmat(os.path.join(raw, "info", "tracks_train_info.mat"))[
        "track_train_info"
    ][0, :2].astype(int)
    names[start - 1 : end] = names[start - 1 : end][::-1]
    with open(path, "w", newline="") as f:
        f.write("".join(n + "\r\n" for n in names))
    first = next(t for t in registry.parse("mars", raw).tracklets if t.split == "train")
    assert list(first.frame_numbers) == sorted(first.frame_numbers)
    assert [os.path.basename(p) for p in first.frame_paths] == sorted(names[start - 1 : end])


def test_published_statistics_are_the_verified_ones():
    # The released info/*.mat: the stored gallery is test minus query with junk: 12,180 - 1,980 rows.
    assert mars.VERIFIED_STATS["gallery"]["tracklets"] == 12180 - 1980
    assert mars.VERIFIED_STATS["gallery"]["frames"] == 681089 - 114493
