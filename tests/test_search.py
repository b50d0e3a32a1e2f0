"""`python -m vreid_jax.deploy.search`: the gallery index, exact and faiss search, results and errors."""

import csv
import json
import os
import pathlib
import types

import numpy as np
import pytest
from helpers import run_command
from PIL import Image
from track_helpers import tracklets

from vreid_jax.deploy import search
from vreid_jax.deploy.tracks import feature_file, gallery
from vreid_jax.deploy.tracks.feature_file import FeatureFileError
from vreid_jax.evaluation import pictures, ranking


def _features(seed, n, dim=16, ids=6):
    """Features around `ids` identity centres, with the pid of each row."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(99).normal(size=(ids, dim))
    pids = rng.integers(0, ids, n)
    return (centres[pids] + 0.8 * rng.normal(size=(n, dim))).astype(np.float32), pids


def _save(tmp_path, name, t):
    path = str(tmp_path / name)
    feature_file.save(path, t)
    return path


@pytest.mark.parametrize("distance,normalize", [("euclidean", True), ("cosine", False)])
def test_search_equals_the_evaluation_ranking(distance, normalize):
    qf, q_pids = _features(0, 9)
    gf, g_pids = _features(1, 40)
    eval_config = types.SimpleNamespace(
        distance=distance, normalize_features=normalize, ap_mode="standard", max_rank=5,
        rerank=False,
    )  # fmt: skip
    labels = lambda pids, cam: types.SimpleNamespace(pids=pids, camids=np.full(len(pids), cam))
    ranked = ranking.rank(qf, gf, labels(q_pids, 0), labels(g_pids, 1), eval_config)
    expected = np.argsort(ranked.distances, axis=1, kind="stable")[:, :7]
    # A chunk smaller than the gallery: the running top k across chunks must not change anything.
    dist, rows = gallery.search(qf, gf, 7, distance, normalize, chunk=6)
    np.testing.assert_array_equal(rows, expected)
    np.testing.assert_allclose(
        dist, np.take_along_axis(ranked.distances, expected, 1), rtol=0, atol=1e-6
    )


@pytest.mark.parametrize(
    "distance,normalize", [("euclidean", True), ("euclidean", False), ("cosine", True)]
)
def test_faiss_equals_exact(distance, normalize):
    pytest.importorskip("faiss")
    qf, _ = _features(2, 20, dim=32)
    gf, _ = _features(3, 500, dim=32)
    d_exact, i_exact = gallery.search(qf, gf, 10, distance, normalize, "exact", chunk=128)
    d_faiss, i_faiss = gallery.search(qf, gf, 10, distance, normalize, "faiss")
    np.testing.assert_array_equal(i_faiss, i_exact)
    np.testing.assert_allclose(d_faiss, d_exact, rtol=0, atol=1e-5)


def test_add_equals_build_and_the_index_round_trips(tmp_path):
    parts = [
        tracklets(_features(s, n)[0], sources=[f"part{s}"] * n) for s, n in ((0, 5), (1, 3), (2, 4))
    ]
    paths = [_save(tmp_path, f"p{i}.npz", p) for i, p in enumerate(parts)]
    at_once, stepwise = str(tmp_path / "a.npz"), str(tmp_path / "b.npz")
    search.build(at_once, paths)
    search.build(stepwise, paths[:1])
    search.add(stepwise, paths[1:2])
    search.add(stepwise, paths[2:])
    a, b = gallery.load(at_once), gallery.load(stepwise)
    assert (
        a.parts
        == b.parts
        == [{"file": p, "rows": n} for p, n in zip(paths, (5, 3, 4), strict=True)]
    )
    for name in ("features", "track_ids", "sources", "first_frame", "preview_boxes"):
        np.testing.assert_array_equal(getattr(a.tracklets, name), getattr(b.tracklets, name))
    np.testing.assert_array_equal(a.tracklets.features, np.concatenate([p.features for p in parts]))
    assert a.tracklets.provenance == parts[0].provenance
    # An index is a features file too; a plain features file is an index of one part.
    assert len(feature_file.load(at_once)) == 12
    assert gallery.load(paths[0]).parts == [{"file": paths[0], "rows": 5}]


def test_bad_inputs_name_the_files_and_leave_the_index_untouched(tmp_path):
    base = _save(tmp_path, "base.npz", tracklets(_features(0, 4)[0]))
    index = str(tmp_path / "g.npz")
    search.build(index, [base])
    before = pathlib.Path(index).read_bytes()
    other_ckpt = _save(
        tmp_path, "other.npz", tracklets(_features(1, 2)[0], checkpoint="runs/x/checkpoints/5")
    )
    with pytest.raises(FeatureFileError, match=r"other.npz comes from nl3d at runs/x/.*the index"):
        search.add(index, [other_ckpt])
    wide = _save(tmp_path, "wide.npz", tracklets(np.ones((2, 8)), model="gltr"))
    with pytest.raises(FeatureFileError, match=r"wide.npz has 8-dimensional .*gltr vs nl3d"):
        search.add(index, [wide])
    with pytest.raises(FeatureFileError, match="missing.npz: no such features file"):
        search.add(index, [str(tmp_path / "missing.npz")])
    empty = _save(tmp_path, "empty.npz", tracklets(np.zeros((0, 16))))
    with pytest.raises(FeatureFileError, match="empty.npz holds no tracklets"):
        search.add(index, [empty])
    with pytest.raises(FeatureFileError, match=r"base.npz row 0 .* already in the index"):
        search.add(index, [base])
    with pytest.raises(search.SearchError, match="no such index"):
        search.add(str(tmp_path / "nope.npz"), [base])
    assert pathlib.Path(index).read_bytes() == before
    out = str(tmp_path / "r.json")
    with pytest.raises(FeatureFileError, match="the query file comes from .*runs/x"):
        search.query(index, [other_ckpt], out)
    with pytest.raises(search.SearchError, match="--rows \\[9\\] out of range"):
        search.query(index, [base], out, rows=["9"])
    assert sorted(os.listdir(tmp_path)) == sorted(
        ["base.npz", "g.npz", "other.npz", "wide.npz", "empty.npz"]
    )


def _write_frames(folder, n, rng):
    os.makedirs(folder, exist_ok=True)
    paths = []
    for i in range(n):
        path = os.path.join(folder, f"{i:06d}.png")
        Image.fromarray(rng.integers(0, 255, (60, 40, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def test_query_writes_json_csv_and_neutral_pictures(tmp_path):
    rng = np.random.default_rng(0)
    frames = _write_frames(str(tmp_path / "img1"), 3, rng)
    previews = [[frames[i % 3], frames[(i + 1) % 3], "", ""] for i in range(8)]
    boxes = np.full((8, 4, 4), np.nan, np.float32)
    boxes[:, 0] = [5, 5, 20, 40]  # A person box in the first preview frame of each row.
    gf = _features(0, 8)[0]
    g = _save(tmp_path, "g_feats.npz", tracklets(gf, previews=previews, boxes=boxes))
    q = _save(tmp_path, "q_feats.npz", tracklets(gf[[2, 5]] + 0.01, previews=previews[:2],
                                                 sources=["query.txt"] * 2))  # fmt: skip
    index = str(tmp_path / "g.npz")
    search.build(index, [g])
    out_json, out_csv = str(tmp_path / "r.json"), str(tmp_path / "r.csv")
    record = search.query(index, [q], out_json, top_k=3, picture=str(tmp_path / "ranked.png"))
    assert json.loads(pathlib.Path(out_json).read_text()) == record
    assert [r["matches"][0]["row"] for r in record["results"]] == [2, 5]
    assert record["distance"] == "euclidean" and record["normalize_features"] is True
    match = record["results"][0]["matches"][0]
    assert {"track_id": "2", "camera": "c1", "first_frame": 21, "last_frame": 30}.items() <= (
        match.items()
    )
    search.query(index, [q], out_csv, track_ids=["1"], top_k=3)
    with open(out_csv) as f:
        table = list(csv.DictReader(f))
    assert [row["rank"] for row in table] == ["1", "2", "3"] and table[0]["gallery_row"] == "5"
    assert tuple(table[0]) == search.CSV_COLUMNS
    for name in ("ranked_q0.png", "ranked_q1.png"):
        pixels = np.asarray(Image.open(tmp_path / name).convert("RGB"))
        # The gallery strips' borders are neutral grey: no identity is known to call them right.
        colours = {tuple(p) for p in pixels[pictures.GAP + 1]}
        assert pictures.NEUTRAL_COLOR in colours
        assert pictures.CORRECT_COLOR not in colours and pictures.WRONG_COLOR not in colours
    # The query itself is never among its results when the query file is the gallery's.
    own = search.query(index, [g], out_json, rows=["4"], top_k=8)
    assert len(own["results"][0]["matches"]) == 7
    assert 4 not in [m["row"] for m in own["results"][0]["matches"]]
    # Re-ranking keeps the result shape.
    rr = search.query(index, [q], out_json, top_k=3, rerank=True)
    assert rr["reranked"] and [len(r["matches"]) for r in rr["results"]] == [3, 3]


def test_query_fails_whole_on_a_missing_preview_frame(tmp_path):
    gf = _features(0, 4)[0]
    previews = [[str(tmp_path / "gone.jpg"), "", "", ""]] * 4
    g = _save(tmp_path, "g.npz", tracklets(gf, previews=previews))
    out = str(tmp_path / "r.json")
    with pytest.raises(search.SearchError, match="gone.jpg"):
        search.query(g, [g], out, top_k=2, picture=str(tmp_path / "p.png"))
    assert not os.path.exists(out) and not os.path.exists(tmp_path / "p.png")
    video = [["clip.mp4#3", "", "", ""]] * 4
    v = _save(tmp_path, "v.npz", tracklets(gf, previews=video))
    try:
        import av  # noqa: F401
    except ImportError:
        with pytest.raises(search.SearchError, match="needs PyAV"):
            search.query(v, [v], out, top_k=2, picture=str(tmp_path / "p.png"))


def test_cli_build_query_and_one_line_errors(tmp_path):
    g = _save(tmp_path, "g_feats.npz", tracklets(_features(0, 6)[0]))
    index, out = str(tmp_path / "g.npz"), str(tmp_path / "r.csv")
    run = lambda *a: run_command(search, *a)  # test_use_a_trained_model runs the console script.
    built = run("build", "--index", index, "--features", g)
    assert built.returncode == 0, built.stderr
    done = run("query", "--index", index, "--features", g, "--rows", "0,1", "--top_k", "2",
               "--out", out)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert len(pathlib.Path(out).read_text().splitlines()) == 1 + 2 * 2
    bad = run("add", "--index", index, "--features", str(tmp_path / "none.npz"))
    assert bad.returncode != 0 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().splitlines()[-1].startswith("error: ")
