"""Bad input fails clearly (naming the file and row) or is skipped and counted; builds are atomic."""

import glob
import os

import numpy as np
import pytest
import scipy.io

from data_prep import build, builders, reader, registry, synthetic
from data_prep.index import DataPrepError

SIZE = dict(num_ids=2, tracklets_per_id=2, min_len=3, max_len=5, height=32, width=16)


def _raw(tmp_path, layout, **overrides):
    raw = str(tmp_path / "raw")
    return raw, synthetic.generate(layout, raw, seed=0, **{**SIZE, **overrides})


def _edit_mars_table(raw, column, value):
    path = os.path.join(raw, "info", "tracks_train_info.mat")
    table = scipy.io.loadmat(path)["track_train_info"]
    table[0, column] = value
    scipy.io.savemat(path, {"track_train_info": table})


def test_missing_file_names_it_and_shows_the_tree(tmp_path):
    raw, _ = _raw(tmp_path, "mars")
    os.remove(os.path.join(raw, "info", "query_IDX.mat"))
    with pytest.raises(
        DataPrepError, match=r"query_IDX\.mat(.|\n)*Expected layout(.|\n)*bbox_train"
    ):
        registry.parse("mars", raw)


def test_missing_manual_dir(tmp_path):
    with pytest.raises(DataPrepError, match="Missing manual_dir(.|\n)*i-LIDS-VID"):
        build.build("ilidsvid", str(tmp_path / "nowhere"), str(tmp_path / "out"))


@pytest.mark.parametrize("column,what", [(2, "pid"), (3, "camera")])
def test_name_list_disagreeing_with_mat_row(tmp_path, column, what):
    raw, truth = _raw(tmp_path, "mars")
    _edit_mars_table(raw, column, 5 if column == 3 else 999)
    with pytest.raises(
        DataPrepError, match=r"train_name\.txt, rows 1\.\.\d+ \(table row 1.*disagrees"
    ):
        registry.parse("mars", raw)
    index = registry.parse("mars", raw, skip_bad=True)
    assert len(index.skipped) == 1 and "table row 1" in index.skipped[0]
    assert len(index.tracklets) == len(truth["tracklets"]) - 1


def test_rows_outside_the_name_list(tmp_path):
    raw, _ = _raw(tmp_path, "mars")
    _edit_mars_table(raw, 1, 10**6)
    with pytest.raises(DataPrepError, match="outside the name list"):
        registry.parse("mars", raw)


@pytest.mark.parametrize(
    "damage,message",
    [
        (lambda b: b[: len(b) // 2], "truncated"),
        (lambda b: b"not an image", "not a JPEG"),
        # Start and end markers intact, the headers in between zeroed: only a decode tells.
        (lambda b: b[:2] + bytes(200) + b[202:], "undecodable"),
    ],
)
def test_truncated_or_unreadable_frame(tmp_path, damage, message):
    raw, truth = _raw(tmp_path, "lsvid")
    victim = truth["tracklets"][-1]["frame_files"][1]
    path = os.path.join(raw, victim)
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(damage(data))
    with pytest.raises(
        DataPrepError, match=rf"list_seq_\w+\.txt, line \d+ .*{os.path.basename(victim)}.*{message}"
    ):
        registry.parse("lsvid", raw)
    index = registry.parse("lsvid", raw, skip_bad=True)
    assert len(index.skipped) == 1 and message in index.skipped[0]


def test_empty_tracklet(tmp_path):
    raw, truth = _raw(tmp_path, "dukev")
    folder = os.path.dirname(os.path.join(raw, truth["tracklets"][0]["frame_files"][0]))
    for name in os.listdir(folder):
        os.remove(os.path.join(folder, name))
    with pytest.raises(DataPrepError, match=rf"{folder}: empty tracklet"):
        registry.parse("dukev", raw)


def test_split_file_shape_must_match_the_persons(tmp_path):
    raw, _ = _raw(tmp_path, "prid2011", num_ids=6)
    path = os.path.join(raw, "train-test people splits", "train_test_splits_prid.mat")
    scipy.io.savemat(path, {"ls_set": np.tile(np.arange(1, 179), (10, 1)).astype(float)})
    with pytest.raises(DataPrepError, match=r"ls_set has shape \(10, 178\), expected \(10, 6\)"):
        registry.parse("prid2011", raw)


def test_split_rows_must_be_permutations(tmp_path):
    raw, _ = _raw(tmp_path, "ilidsvid", num_ids=4)
    path = os.path.join(raw, "train-test people splits", "train_test_splits_ilidsvid.mat")
    scipy.io.savemat(path, {"ls_set": np.ones((10, 4))})
    with pytest.raises(DataPrepError, match="row 1 is not a permutation"):
        registry.parse("ilidsvid", raw)


def test_lsvid_query_index_must_be_matlab_v73(tmp_path):
    raw, _ = _raw(tmp_path, "lsvid")
    path = os.path.join(raw, "test", "data", "info_test.mat")
    scipy.io.savemat(path, {"query": np.ones((1, 2))})  # a v5 file: not HDF5
    with pytest.raises(DataPrepError, match="info_test.mat: cannot read the MATLAB v7.3"):
        registry.parse("lsvid", raw)


def _nothing_left(data_dir, dataset):
    assert not reader.is_built(dataset, data_dir)
    assert not os.path.exists(os.path.join(data_dir, dataset))
    assert glob.glob(os.path.join(data_dir, f".{dataset}-building-*")) == []


def test_interrupted_build_leaves_nothing(tmp_path, monkeypatch):
    raw, _ = _raw(tmp_path, "mars")
    data_dir = str(tmp_path / "tfds")
    original = builders._ReIdBuilder._generate_examples

    def interrupted(self, tracklets):
        for i, example in enumerate(original(self, tracklets)):
            if i == 2:
                raise KeyboardInterrupt  # as if the user pressed Ctrl-C mid-split
            yield example

    monkeypatch.setattr(builders._ReIdBuilder, "_generate_examples", interrupted)
    with pytest.raises(KeyboardInterrupt):
        build.build("mars", raw, data_dir)
    _nothing_left(data_dir, "mars")


def test_failed_build_leaves_nothing_and_skip_bad_builds(tmp_path):
    raw, truth = _raw(tmp_path, "ilidsvid", num_ids=4)
    data_dir = str(tmp_path / "tfds")
    with open(os.path.join(raw, truth["tracklets"][0]["frame_files"][0]), "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n cut short")
    with pytest.raises(DataPrepError, match="truncated"):
        build.build("ilidsvid", raw, data_dir)
    _nothing_left(data_dir, "ilidsvid")
    build.build("ilidsvid", raw, data_dir, skip_bad=True)
    skipped = reader.build_metadata("ilidsvid", data_dir)["skipped"]
    assert len(skipped) == 1 and truth["tracklets"][0]["frame_files"][0] in skipped[0]


def test_stale_temporary_folder_of_a_killed_build_is_removed(tmp_path):
    raw, _ = _raw(tmp_path, "prid2011", num_ids=4)
    data_dir = tmp_path / "tfds"
    stale = data_dir / ".prid2011-building-killed" / "prid2011"
    stale.mkdir(parents=True)
    build.build("prid2011", raw, str(data_dir))
    # The dataset, and the (released) build lock, which stays for the next build.
    assert sorted(os.listdir(data_dir)) == [".prid2011.build.lock", "prid2011"]


def test_resize_flag_parsing():
    assert build.parse_size("256x128") == (256, 128)
    for bad in ("256", "0x10", "ax2"):
        with pytest.raises(DataPrepError, match="--resize"):
            build.parse_size(bad)
