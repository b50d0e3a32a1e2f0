"""`python -m vreid_jax.deploy.relink`: constraints, metrics, and re-linking a synthetic video's broken
tracks."""

import json
import os

import numpy as np
import pytest
from helpers import run_command
from track_helpers import fragment_video, tracklets, trait_features

from data_prep import synthetic_video
from vreid_jax.deploy import relink
from vreid_jax.deploy.relink import Fragment
from vreid_jax.deploy.tracks import feature_file, mot


def test_overlapping_tracks_of_one_camera_never_merge_even_through_a_chain():
    # Identical features everywhere: only the constraints keep fragments apart.
    frags = [
        Fragment(0, 1, "c1", 1, 10),
        Fragment(0, 2, "c1", 5, 20),  # alive with 1 at frames 5-10
        Fragment(0, 3, "c1", 21, 30),  # could follow 1 or 2, not both
        Fragment(0, 4, "c2", 5, 20),  # another camera: may overlap in time
    ]
    labels, merges = relink.link(np.zeros((4, 4)), frags, threshold=0.1)
    assert labels[0] != labels[1]
    assert labels[2] in (labels[0], labels[1]) and labels[3] in (labels[0], labels[1])
    for group in set(labels):
        members = [f for f, lab in zip(frags, labels, strict=True) if lab == group]
        assert relink._allowed(members, None)
    assert len(merges) == 2


def test_threshold_max_gap_and_linkage():
    frags = [Fragment(0, i, "c1", 1 + 20 * i, 10 + 20 * i) for i in range(3)]  # gaps of 10
    d = np.array([[0, 0.2, 0.9], [0.2, 0, 0.3], [0.9, 0.3, 0]])
    assert relink.link(d, frags, 0.25)[0].tolist() == [0, 0, 1]
    # Average linkage: {0,1} to 2 is (0.9 + 0.3) / 2 = 0.6; single linkage: 0.3.
    assert relink.link(d, frags, 0.5)[0].tolist() == [0, 0, 1]
    assert relink.link(d, frags, 0.5, linkage="single")[0].tolist() == [0, 0, 0]
    assert relink.link(d, frags, 0.5, max_gap=9, linkage="single")[0].tolist() == [0, 1, 2]
    assert relink.link(d, frags, 0.5, max_gap=10, linkage="single")[0].tolist() == [0, 0, 0]


def test_pairwise_scores_and_idf1(tmp_path):
    s = relink.pairwise_scores([0, 0, 1, 1, 2], [5, 5, 5, 6, 6])
    # Predicted pairs: (0,1), (2,3); true pairs: (0,1), (0,2), (1,2), (3,4).
    assert s["precision"] == 0.5 and s["recall"] == 0.25 and s["true_pairs"] == 4
    assert relink.pairwise_scores([0, 1, 2], [0, 1, 2])["precision"] == 1.0
    gt_path, pred_path = tmp_path / "gt.txt", tmp_path / "pred.txt"
    gt_path.write_text("".join(f"{f},1,10,10,20,40\n{f},2,100,10,20,40\n" for f in range(1, 11)))
    # Person 1 split in two ids (5 + 5 frames), person 2 right, one false box.
    pred_path.write_text(
        "".join(f"{f},{7 if f <= 5 else 8},11,10,20,40\n{f},9,100,10,20,40\n" for f in range(1, 11))
        + "3,10,200,200,5,5\n"
    )
    score = relink.idf1([(mot.read(str(gt_path)), mot.read(str(pred_path)))])
    assert score["idtp"] == 15 and score["gt"] == 20 and score["pred"] == 21
    assert score["idf1"] == pytest.approx(30 / 41)


def test_relink_recovers_the_synthetic_video_tracks(tmp_path):
    root = str(tmp_path / "video")
    video = synthetic_video.generate(root, seed=3, num_people=5, num_frames=160)
    rng = np.random.default_rng(0)
    paths, truth = fragment_video(root, rng)
    features = str(tmp_path / "features.npz")
    feature_file.save(features, trait_features(paths, truth, video["people"], rng))
    out_dir = str(tmp_path / "relinked")
    report = relink.relink(paths, features, out_dir, threshold=0.35)
    # Outputs keep the inputs' relative layout; the report is written beside them.
    assert report["outputs"] == [os.path.join(out_dir, c, "tracks.txt") for c in ("cam1", "cam2")]
    assert json.loads((tmp_path / "relinked" / "relink.json").read_text()) == report
    new = [mot.read(p) for p in report["outputs"]]
    # Every fragment's new id vs its person: pairwise precision and recall over fragments.
    predicted, actual = [], []
    for fi, path in enumerate(paths):
        old = mot.read(path)
        # Rows are re-sorted by the new ids: find each box again by frame and position.
        new_id = {
            (f, *b): i for f, b, i in zip(new[fi].frames, new[fi].boxes.tolist(), new[fi].ids,
                                          strict=True)
        }  # fmt: skip
        assert len(new_id) == len(old) == len(new[fi])
        for tid, idx in old.track_rows().items():
            ids = {new_id[old.frames[r], *old.boxes[r].tolist()] for r in idx}
            assert len(ids) == 1  # A fragment stays whole.
            predicted.append(ids.pop())
            actual.append(truth[fi, tid])
    scores = relink.pairwise_scores(predicted, actual)
    assert scores["precision"] == 1.0 and scores["recall"] == 1.0, scores
    # One id per person across both cameras: the relinked IDF1 against ground truth is 1 up to
    # the dropped boxes, far above the fragmented input's.
    gts = [mot.read(os.path.join(root, c, "gt", "gt.txt")) for c in ("cam1", "cam2")]
    before = relink.idf1(list(zip(gts, [mot.read(p) for p in paths], strict=True)))
    after = relink.idf1(list(zip(gts, new, strict=True)))
    assert after["idf1"] > 0.97 and before["idf1"] < 0.7, (before, after)
    assert report["num_groups"] == 5 and len(report["merges"]) == report["num_fragments"] - 5
    # A tight max_gap forbids every cross-camera link whose cameras are far apart in time; the
    # constraints always hold.
    assert relink.relink(paths, features, out_dir, 0.35, max_gap=0)["num_groups"] > 5


def test_bad_inputs_and_cli(tmp_path):
    tracks = tmp_path / "t.txt"
    tracks.write_text("1,1,1,1,5,5\n2,1,1,1,5,5\n5,2,1,1,5,5\n")
    t = tracklets(np.eye(2), track_ids=["1", "3"], sources=[str(tracks)] * 2)
    features = str(tmp_path / "f.npz")
    feature_file.save(features, t)
    out = str(tmp_path / "out")
    with pytest.raises(relink.RelinkError, match="track '3' of .*t.txt, which that file"):
        relink.relink([str(tracks)], features, out, 0.5)
    other = tracklets(np.eye(2), sources=["elsewhere.txt"] * 2)
    feature_file.save(features, other)
    with pytest.raises(relink.RelinkError, match="comes from elsewhere.txt, which is not among"):
        relink.relink([str(tracks)], features, out, 0.5)
    assert not os.path.exists(out)  # Nothing written after a failure.
    feature_file.save(
        features, tracklets(np.eye(2), track_ids=["1", "2"], sources=[str(tracks)] * 2)
    )
    run = run_command(relink, "--tracks", tracks, "--features", features, "--threshold", 2,
                      "--out_dir", out)  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "out" / "t.txt").read_text() == "1,1,1,1,5,5\n2,1,1,1,5,5\n5,1,1,1,5,5\n"
    bad = run_command(relink, "--tracks", tracks, "--features", tmp_path / "no.npz",
                      "--threshold", 1, "--out_dir", out)  # fmt: skip
    assert bad.returncode != 0 and bad.stderr.strip().startswith("error: ")


def test_synthetic_video_ships_broken_tracks_that_relink_repairs(tmp_path):
    root = str(tmp_path / "video")
    video = synthetic_video.generate(root, seed=1, num_people=3, num_frames=100)
    paths = [os.path.join(root, c, "tracks.txt") for c in video["cameras"]]
    truth = {
        (fi, int(tid)): pid
        for fi, cam in enumerate(video["cameras"])
        for tid, pid in video["fragments"][cam].items()
    }
    assert sorted(truth) == sorted(
        (fi, t) for fi, p in enumerate(paths) for t in mot.read(p).track_rows()
    )
    features = str(tmp_path / "f.npz")
    rng = np.random.default_rng(0)
    feature_file.save(features, trait_features(paths, truth, video["people"], rng))
    report = relink.relink(paths, features, str(tmp_path / "out"), threshold=0.35)
    assert report["num_groups"] == 3
