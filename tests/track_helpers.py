"""Features files built in memory for the search and relink tests (no model needed), and broken
tracks of the synthetic video (also used by benchmarks/relink.py)."""

import os

import numpy as np

from data_prep import render
from vreid_jax.deploy.tracks import mot
from vreid_jax.deploy.tracks.feature_file import NUM_PREVIEWS, TrackletFeatures


def provenance(
    model="nl3d", checkpoint="runs/demo/checkpoints/100", distance="euclidean", normalize=True
):
    return {
        "model": model,
        "checkpoint": checkpoint,
        "step": 100,
        "dataset": "mars",
        "config": {"eval": {"distance": distance, "normalize_features": normalize}},
    }  # fmt: skip


def tracklets(
    features,
    *,
    track_ids=None,
    cameras=None,
    sources=None,
    first=None,
    last=None,
    previews=None,
    boxes=None,
    **prov,
) -> TrackletFeatures:
    """Rows with the given features; other fields filled with plausible values."""
    features = np.asarray(features, np.float32)
    n = len(features)
    first = np.arange(n) * 10 + 1 if first is None else np.asarray(first)
    last = first + 9 if last is None else np.asarray(last)
    if previews is None:
        previews = np.full((n, NUM_PREVIEWS), "", dtype=object)
    return TrackletFeatures(
        features=features,
        track_ids=[str(i) for i in range(n)] if track_ids is None else track_ids,
        cameras=["c1"] * n if cameras is None else cameras,
        first_frame=first,
        last_frame=last,
        num_frames=(last - first + 1).astype(np.int32),
        sources=["tracks.txt"] * n if sources is None else sources,
        preview_frames=np.asarray(previews, str),
        preview_boxes=np.full((n, NUM_PREVIEWS, 4), np.nan) if boxes is None else boxes,
        provenance=provenance(**prov),
    )  # fmt: skip


def fragment_video(root, rng, cameras=("cam1", "cam2")):
    """The ground-truth tracks of every camera cut into fragments with gaps, as tracker output;
    returns (track file paths, truth: (file, fragment id) -> person id)."""
    paths, truth = [], {}
    next_id = 1  # Fragment ids are distinct across cameras too, as IDF1 over cameras needs.
    for cam in cameras:
        gt = mot.read(os.path.join(root, cam, "gt", "gt.txt"))
        keep = np.ones(len(gt), bool)
        ids = np.zeros(len(gt), np.int64)
        for pid, idx in gt.track_rows().items():
            num_cuts = 2 if len(idx) >= 40 else 1 if len(idx) >= 20 else 0
            cuts = np.sort(rng.choice(np.arange(8, len(idx) - 8), num_cuts, replace=False))
            starts = np.r_[0, cuts]
            for s, e in zip(starts, np.r_[cuts, len(idx)], strict=True):
                ids[idx[s:e]] = next_id
                keep[idx[s : s + int(rng.integers(0, 6))]] = s == 0  # a gap before each cut
                truth[len(paths), next_id] = pid
                next_id += 1
        tracks = mot.MotTracks(
            gt.path, gt.frames[keep], ids[keep], gt.boxes[keep], gt.lines[keep],
            [r for r, k in zip(gt.rest, keep, strict=True) if k],
        )  # fmt: skip
        path = os.path.join(root, "tracker", cam, "tracks.txt")
        mot.write(path, tracks)
        paths.append(path)
    return paths, truth


def trait_features(paths, truth, people, rng, noise=0.05):
    """A features file like extract's, with features from each person's traits plus noise and a
    camera-dependent offset (no model: the test is about linking, not about features)."""
    codes = {p["id"]: p["traits"] for p in people}
    rows = []
    for fi, path in enumerate(paths):
        tracks = mot.read(path)
        shift = 0.1 * np.random.default_rng(fi).normal(size=sum(render.TRAIT_SIZES))
        for tid, idx in tracks.track_rows().items():
            traits = list(codes[truth[fi, tid]].values())
            onehot = np.concatenate([np.eye(n)[v] for n, v in zip(render.TRAIT_SIZES, traits,
                                                                   strict=True)])  # fmt: skip
            feature = onehot + shift + noise * rng.normal(size=onehot.shape)
            frames = tracks.frames[idx]
            rows.append((feature, str(tid), f"cam{fi + 1}", path, frames.min(), frames.max()))
    t = tracklets(
        np.stack([r[0] for r in rows]), track_ids=[r[1] for r in rows],
        cameras=[r[2] for r in rows], sources=[r[3] for r in rows],
        first=np.array([r[4] for r in rows]), last=np.array([r[5] for r in rows]),
    )  # fmt: skip
    return t
