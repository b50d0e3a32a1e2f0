"""The synthetic generator: deterministic per seed, real conventions, identity traits."""

import filecmp
import os
import time

import h5py
import numpy as np
import pytest
from helpers import run_command

from data_prep import registry, render, synthetic
from data_prep.index import DataPrepError

SIZE = dict(num_ids=3, tracklets_per_id=2, min_len=3, max_len=5, height=32, width=16)


def _files(root):
    return sorted(
        os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs
    )


@pytest.mark.parametrize("layout", ["mars", "lsvid"])  # scipy .mat and HDF5 v7.3 index files
def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path, layout):
    a, b, c = (str(tmp_path / n) for n in "abc")
    truth_a = synthetic.generate(layout, a, seed=4, **SIZE)
    time.sleep(1.1)  # file formats that stamp the time (seconds) would now differ
    truth_b = synthetic.generate(layout, b, seed=4, **SIZE)
    synthetic.generate(layout, c, seed=5, **SIZE)
    assert truth_a == truth_b
    files = _files(a)
    assert files == _files(b)
    _, mismatch, errors = filecmp.cmpfiles(a, b, files, shallow=False)
    assert mismatch == [] and errors == []
    frame = next(f for f in files if f.endswith(".jpg"))  # first frame in sorted order
    assert not os.path.exists(os.path.join(c, frame)) or not filecmp.cmp(
        os.path.join(a, frame), os.path.join(c, frame), shallow=False
    )


def test_refuses_a_non_empty_folder_and_bad_sizes(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "keep.txt").write_text("mine")
    with pytest.raises(DataPrepError, match="not empty"):
        synthetic.generate("mars", str(tmp_path / "x"), **SIZE)
    assert os.listdir(tmp_path / "x") == ["keep.txt"]
    with pytest.raises(DataPrepError, match="min_len"):
        synthetic.generate("dukev", str(tmp_path / "y"), **{**SIZE, "min_len": 9})
    with pytest.raises(DataPrepError, match="Unknown layout"):
        synthetic.generate("market", str(tmp_path / "z"), **SIZE)
    assert sorted(os.listdir(tmp_path)) == ["x"]  # nothing half-written


def test_lsvid_query_index_is_a_matlab_v73_file(tmp_path):
    truth = synthetic.generate("lsvid", str(tmp_path / "raw"), **SIZE)
    path = tmp_path / "raw" / "test" / "data" / "info_test.mat"
    assert path.read_bytes().startswith(b"MATLAB 7.3 MAT-file")
    with h5py.File(path, "r") as f:
        rows = f["query"][0, :].astype(int) - 1
    test = sorted(
        (t for t in truth["tracklets"] if t["split"] in ("query", "gallery")),
        key=lambda t: t["key"],
    )
    assert sorted(t["key"] for t in test if t["split"] == "query") == [test[r]["key"] for r in rows]


def test_prid_persons_failing_the_27_frame_filter_are_dropped(tmp_path):
    raw = str(tmp_path / "raw")
    truth = synthetic.generate("prid2011", raw, **{**SIZE, "num_ids": 10})
    on_disk = os.listdir(os.path.join(raw, "prid_2011", "multi_shot", "cam_a"))
    shared = [p for p in on_disk if int(p[-4:]) <= 200]
    kept = sorted({t["pid"] for t in truth["tracklets"]})
    assert len(kept) == 10 < len(shared)  # some two-camera persons are too short
    assert any(int(p[-4:]) > 200 for p in on_disk)  # single-camera persons exist and are ignored
    index = registry.parse("prid2011", raw)
    assert sorted({t.pid for t in index.tracklets}) == kept
    assert all(len(t.frame_paths) >= 27 for t in index.tracklets)


def test_dukev_frame_numbers_have_gaps_and_queries_repeat_in_gallery(tmp_path):
    truth = synthetic.generate(
        "dukev", str(tmp_path / "raw"), **{**SIZE, "min_len": 30, "max_len": 40}
    )
    numbers = [t["frame_numbers"] for t in truth["tracklets"]]
    assert any(np.any(np.diff(n) > 1) for n in numbers)
    query = {t["key"].split("/", 2)[2] for t in truth["tracklets"] if t["split"] == "query"}
    gallery = {t["key"].split("/", 2)[2] for t in truth["tracklets"] if t["split"] == "gallery"}
    assert query and query <= gallery


def test_identities_differ_by_trait_combinations():
    codes = range(0, int(np.prod(render.TRAIT_SIZES)), 997)
    idents = [render.identity_from_code(c) for c in codes]
    assert len(set(idents)) == len(idents)
    # A shared palette: many identities wear the same top colour.
    tops = [i.top for i in idents]
    assert max(tops.count(c) for c in set(tops)) > len(idents) // len(render.PALETTE) // 2


def test_cameras_change_the_picture_of_a_person():
    rng = np.random.default_rng(0)
    ident = render.identity_from_code(123)
    cams = render.make_cameras(rng, 2, 64, 32, difficulty=1.0)
    a, b = (render.render_person(rng, ident, c, 4, 1.0).astype(float) for c in cams)
    assert a.shape == (4, 64, 32, 3)
    assert np.abs(a.mean((0, 1, 2)) - b.mean((0, 1, 2))).max() > 5  # colour cast and scene


def test_cli_writes_a_layout(tmp_path):
    out = tmp_path / "cli"
    args = [
        "--layout",
        "ilidsvid",
        "--out",
        str(out),
        "--num_ids",
        "2",
        "--min_len",
        "2",
        "--max_len",
        "3",
        "--height",
        "32",
        "--width",
        "16",
    ]
    result = run_command(synthetic, *args)  # `python -m data_prep.synthetic`, in this process.
    assert result.returncode == 0, result.stderr
    assert "ilidsvid ->" in result.stdout
    assert (out / "train-test people splits" / "train_test_splits_ilidsvid.mat").exists()
