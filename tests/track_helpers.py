"""Features files built in memory for the search and relink tests (no model needed)."""

import numpy as np

from vreid_jax.tracks.feature_file import NUM_PREVIEWS, TrackletFeatures


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
