"""Real-scale synthetic data (`data_prep.real_scale`): the plan has the published statistics, and a
small fraction of it, written to disk, parses with the real parsers and keeps the proportions."""

import collections
import os

import numpy as np
import pytest
from helpers import run_command

from data_prep import lsvid, mars, real_scale, synthetic
from data_prep.index import DataPrepError

SCALE = 0.002  # ~40 MARS tracklets, ~2,400 frames


def _splits(plan):
    """Per split of a plan: tracklets, frames, pids (junk excluded), junk and distractor counts."""
    out = collections.defaultdict(collections.Counter)
    for subset, pid, _, length, is_query in plan:
        split = "train" if subset == "train" else ("query" if is_query else "gallery")
        out[split].update(tracklets=1, frames=length, junk=pid == -1, distractors=pid == 0)
    for split in out:
        out[split]["ids"] = len({t[1] for t in plan if t[1] != -1 and _split(t) == split})
    return out


def _split(t):
    return "train" if t[0] == "train" else ("query" if t[4] else "gallery")


def test_full_scale_mars_plan_has_the_published_statistics():
    plan = real_scale.mars_plan(np.random.default_rng(0), 1.0)
    got = {split: dict(c) for split, c in _splits(plan).items()}
    expected = {  # MARS's verified statistics (the stored gallery keeps junk)
        "train": dict(ids=625, tracklets=8298, frames=509914, junk=0, distractors=0),
        "query": dict(ids=626, tracklets=1980, frames=114493, junk=0, distractors=0),
        "gallery": dict(ids=621, tracklets=10200, frames=566596, junk=870, distractors=3248),
    }
    assert got == expected
    lengths = lambda split: [t[3] for t in plan if _split(t) == split]
    assert (min(lengths("train")), max(lengths("train"))) == (5, 900)
    assert (min(lengths("query")), max(lengths("query"))) == (2, 880)
    assert max(lengths("gallery")) == 920
    # Without the queries in the gallery (torchreid), 140 queries lack a cross-camera match.
    gallery_cams = collections.defaultdict(set)
    for _, pid, cam, _, is_query in plan:
        if not is_query and pid > 0:
            gallery_cams[pid].add(cam)
    queries = [t for t in plan if t[4]]
    assert sum(not gallery_cams[pid] - {cam} for _, pid, cam, _, _ in queries) == 140
    assert all(len({cam for _, p, cam, _, _ in queries if p == pid}) >= 2 for _, pid, *_ in queries)


def test_full_scale_lsvid_plan_has_the_published_counts():
    plan = real_scale.lsvid_plan(np.random.default_rng(0), 1.0)
    got = _splits(plan)
    assert [got[s]["tracklets"] for s in ("train", "query", "gallery")] == [2831, 3504, 7829]
    assert (got["train"]["ids"], got["query"]["ids"]) == (842, 2730)
    assert got["train"]["frames"] == 550419
    assert got["query"]["frames"] + got["gallery"]["frames"] == 2277075
    assert {t[2] for t in plan} == set(range(1, 16))


def test_heavy_tailed_sums_exactly_within_bounds_and_keeps_the_pins():
    rng = np.random.default_rng(1)
    x = real_scale.heavy_tailed(rng, 1000, 61450, 5, 900, 0.76, pins=(5, 900))
    assert x.sum() == 61450 and x.min() == 5 and x.max() == 900
    assert 30 < np.median(x) < 60  # heavy-tailed: the median is below the mean
    with pytest.raises(DataPrepError, match="cannot draw"):
        real_scale.heavy_tailed(rng, 10, 5, 1, 3, 0.76)
    assert real_scale.parse_scale("real") == 1.0 and real_scale.parse_scale("0.1") == 0.1
    for bad in ("0", "1.5", "half", "nan"):
        with pytest.raises(DataPrepError, match="scale"):
            real_scale.parse_scale(bad)


def test_mars_fraction_parses_with_the_real_parser_in_proportion(tmp_path):
    raw = str(tmp_path / "raw")
    truth = synthetic.generate("mars", raw, seed=0, scale=SCALE)
    index = mars.parse(raw)
    parsed = sorted((t.key, t.split, t.pid, t.camid, len(t.frame_paths)) for t in index.tracklets)
    assert parsed == [
        (t["key"], t["split"], t["pid"], t["camid"], len(t["frame_numbers"]))
        for t in truth["tracklets"]
    ]
    by_split = collections.defaultdict(list)
    for t in index.tracklets:
        by_split[t.split].append(t)
    # Counts scale with the real ones; the mean length is kept.
    assert len(by_split["train"]) == round(8298 * SCALE)
    assert len(by_split["query"]) == round(1980 * SCALE)
    test = by_split["query"] + by_split["gallery"]
    assert sum(t.is_junk for t in test) == round(870 * SCALE)
    assert sum(t.is_distractor for t in test) == round(3248 * SCALE)
    train_frames = sum(len(t.frame_paths) for t in by_split["train"])
    assert train_frames == round(509914 * len(by_split["train"]) / 8298)
    assert all(5 <= len(t.frame_paths) <= 900 for t in by_split["train"])
    assert all(2 <= len(t.frame_paths) <= 920 for t in test)
    # Real bytes per frame (~4.9 KB JPEGs), repeated frames hard-linked.
    paths = [p for t in index.tracklets for p in t.frame_paths]
    sizes = [os.path.getsize(p) for p in paths]
    assert 4400 < np.mean(sizes) < 5400
    assert max(os.stat(p).st_nlink for p in paths) > 1
    with open(paths[0], "rb") as f:
        assert f.read(2) == b"\xff\xd8"


def test_lsvid_fraction_parses_with_the_real_parser(tmp_path):
    raw = str(tmp_path / "raw")
    truth = synthetic.generate("lsvid", raw, seed=0, scale=SCALE, link_frames=False)
    index = lsvid.parse(raw)
    assert sorted((t.key, t.split, t.pid) for t in index.tracklets) == [
        (t["key"], t["split"], t["pid"]) for t in truth["tracklets"]
    ]
    queries = [t for t in index.tracklets if t.split == "query"]
    gallery = [t for t in index.tracklets if t.split == "gallery"]
    assert len(queries) == round(3504 * SCALE)
    for q in queries:  # every query has a cross-camera match (assumed, see real_scale)
        assert any(g.pid == q.pid and g.camid != q.camid for g in gallery)
    paths = [p for t in index.tracklets for p in t.frame_paths]
    assert all(os.stat(p).st_nlink == 1 for p in paths)  # copies
    assert 1.0 < np.mean([os.path.getsize(p) for p in paths]) / 4900 < 2.5  # larger crops


def test_refuses_size_flags_with_scale_other_layouts_and_missing_sizes(tmp_path):
    out = str(tmp_path / "x")
    args = ["--layout", "mars", "--out", out, "--scale", "real", "--num_ids", "4"]
    result = run_command(synthetic, *args)  # `python -m data_prep.synthetic`, in this process.
    assert result.returncode != 0 and "--num_ids do not apply with --scale" in result.stderr
    with pytest.raises(DataPrepError, match="scale is available for"):
        synthetic.generate("dukev", out, scale=0.1)
    with pytest.raises(DataPrepError, match="required"):
        synthetic.generate("mars", out)
    assert not os.path.exists(out)
