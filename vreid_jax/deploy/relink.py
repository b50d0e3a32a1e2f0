r"""Offline re-linking of broken tracks: merge track fragments of one person by appearance.

  vreid-relink --tracks cam1/trk.txt [--tracks cam2/trk.txt ...] \
      --features F.npz --threshold 0.6 --out_dir relinked/ [--max_gap 250] [--linkage average] \
      [--report relinked/relink.json]

Input: MOT track files (one per camera, or several per camera) and a features file extracted from
them (`vreid-extract` with the same track files): one row per (track file, track id),
the file in `sources`, the id in `track_ids`, the camera in `cameras`, the frame span in
`first_frame`/`last_frame`.

Merging is agglomerative, closest groups first, with evaluation's distance (`config.eval.distance`
and `normalize_features` of the features' run); the distance between two groups is the mean
('average') or smallest ('single') distance between their fragments. Two groups are merged only if

  * their distance is at most `threshold` (in the distance's own units: for normalised Euclidean
    features, 0 = identical and 2 = opposite);
  * within every camera, the frame spans of the merged group stay disjoint: two tracks alive at
    the same time in one camera are never the same person, directly or through a chain of merges;
  * with `max_gap`, no gap in the merged group's time line (frames between one fragment's end and
    the next one's start, over all cameras: the cameras' frame numbers are taken to share a clock)
    exceeds `max_gap` frames.

Output: every track file rewritten into `out_dir` with one new id per merged group (ids 1, 2, ...,
the same id across all files for one group, ordered by first appearance; other columns unchanged),
at the input's path relative to the inputs' common folder, and a JSON report of the merges (which
fragments joined, at what distance) and the final groups. Tracks that have no features row stay
alone (listed in the report). Everything is computed before anything is written, and each file is
written atomically.

`pairwise_scores` and `idf1` measure a re-linking against ground truth (tests and benchmarks).
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import scipy.optimize
from absl import flags, logging

from vreid_jax import cli, errors, files
from vreid_jax.deploy.tracks import feature_file, gallery, mot
from vreid_jax.evaluation import metrics

LINKAGES = ("average", "single")


class RelinkError(errors.UserError):
    """Inputs that do not fit together or settings out of range."""


@dataclasses.dataclass(frozen=True)
class Fragment:
    """One input track: its file (index into the inputs), id, camera and frame span."""

    file: int
    track_id: int
    camera: str
    first: int
    last: int


# ------------------------------------------------------------------------------------- linking
def _allowed(fragments: list[Fragment], max_gap: int | None) -> bool:
    """Whether one person can be all these fragments (module docstring's constraints)."""
    by_time = sorted(fragments, key=lambda f: (f.first, f.last))
    last_seen = {}
    for f in by_time:
        if f.camera in last_seen and f.first <= last_seen[f.camera]:
            return False
        last_seen[f.camera] = max(last_seen.get(f.camera, f.last), f.last)
    if max_gap is not None:
        end = by_time[0].last
        for f in by_time[1:]:
            if f.first - end - 1 > max_gap:
                return False
            end = max(end, f.last)
    return True


def link(
    distances: np.ndarray,
    fragments: list[Fragment],
    threshold: float,
    max_gap: int | None = None,
    linkage: str = "average",
) -> tuple[np.ndarray, list[dict]]:
    """Agglomerative merging under the constraints of the module docstring.

    Args:
      distances: [N, N] symmetric fragment distances.
      fragments: the N fragments (camera and frame span are used).
      threshold: largest group distance that is merged.
      max_gap: largest gap in frames inside a group (None: unbounded).
      linkage: 'average' (mean pairwise distance) or 'single' (smallest).

    Returns:
      (group label per fragment, 0..G-1 in order of each group's first fragment index;
       merges in the order made, {"distance", "joined": [fragment indices], "with": [...]})
    """
    if linkage not in LINKAGES:
        raise RelinkError(f"Unknown linkage {linkage!r}; expected one of {LINKAGES}.")
    n = len(fragments)
    true = np.array(distances, np.float64)
    if true.shape != (n, n):
        raise ValueError(f"distances {true.shape} do not fit {n} fragments.")
    search = true.copy()  # `true` with inf where a pair is blocked, inactive or on the diagonal.
    np.fill_diagonal(search, np.inf)
    members = [[i] for i in range(n)]
    merges = []
    while n > 1:
        flat = int(np.argmin(search))
        a, b = divmod(flat, n)
        if not search[a, b] <= threshold:
            break
        if not _allowed([fragments[i] for i in members[a] + members[b]], max_gap):
            search[a, b] = search[b, a] = np.inf
            continue
        a, b = min(a, b), max(a, b)
        merges.append(
            {"distance": float(true[a, b]), "joined": list(members[a]), "with": list(members[b])}
        )
        na, nb = len(members[a]), len(members[b])
        if linkage == "average":
            row = (na * true[a] + nb * true[b]) / (na + nb)
        else:
            row = np.minimum(true[a], true[b])
        true[a], true[:, a] = row, row
        members[a] += members[b]
        members[b] = []
        alive = np.array([bool(m) for m in members])
        search[a] = search[:, a] = np.where(alive, row, np.inf)
        search[a, a] = np.inf
        search[b] = search[:, b] = np.inf
    labels = np.empty(n, np.int64)
    for label, group in enumerate(g for g in members if g):
        labels[group] = label
    return labels, merges


# ------------------------------------------------------------------------------------- scoring
def pairwise_scores(predicted, truth) -> dict:
    """Pairwise merge precision and recall over fragments: of the fragment pairs put in one group,
    the share that are one identity (precision), and of the pairs that are one identity, the share
    put in one group (recall). 1.0 when there is no pair to count."""
    predicted, truth = np.asarray(predicted), np.asarray(truth)
    pairs = lambda counts: int(np.sum(counts * (counts - 1) // 2))
    both = pairs(np.unique(np.stack([predicted, truth], 1), axis=0, return_counts=True)[1])
    merged = pairs(np.unique(predicted, return_counts=True)[1])
    same = pairs(np.unique(truth, return_counts=True)[1])
    precision = both / merged if merged else 1.0
    recall = both / same if same else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "true_pairs": same}


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[len(a), len(b)] IoU of (x, y, w, h) boxes."""
    ax1, ay1 = a[:, 0] + a[:, 2], a[:, 1] + a[:, 3]
    bx1, by1 = b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]
    w = np.clip(np.minimum(ax1[:, None], bx1) - np.maximum(a[:, None, 0], b[:, 0]), 0, None)
    h = np.clip(np.minimum(ay1[:, None], by1) - np.maximum(a[:, None, 1], b[:, 1]), 0, None)
    inter = w * h
    union = (a[:, 2] * a[:, 3])[:, None] + b[:, 2] * b[:, 3] - inter
    return inter / np.maximum(union, 1e-12)


def idf1(pairs: list[tuple[mot.MotTracks, mot.MotTracks]], iou_threshold: float = 0.5) -> dict:
    """IDF1 (Ristani et al. 2016) of predicted tracks against ground truth, over one or more
    cameras given as (ground truth, prediction) pairs; ids are global across cameras.

    A predicted box matches a ground-truth box of the same camera and frame when their IoU is at
    least `iou_threshold`; each ground-truth identity is then assigned at most one predicted id
    (and vice versa) so that the number of matched boxes, IDTP, is largest.
    IDF1 = 2 IDTP / (ground-truth boxes + predicted boxes).
    """
    counts: dict[tuple[int, int], int] = {}
    num_gt = num_pred = 0
    for gt, pred in pairs:
        num_gt, num_pred = num_gt + len(gt), num_pred + len(pred)
        for frame in np.intersect1d(gt.frames, pred.frames):
            g, p = gt.frames == frame, pred.frames == frame
            overlap = _iou(gt.boxes[g], pred.boxes[p]) >= iou_threshold
            for i, j in zip(*np.nonzero(overlap), strict=True):
                key = (int(gt.ids[g][i]), int(pred.ids[p][j]))
                counts[key] = counts.get(key, 0) + 1
    idtp = 0
    if counts:
        gids = sorted({k[0] for k in counts})
        pids = sorted({k[1] for k in counts})
        weight = np.zeros((len(gids), len(pids)))
        for (g, p), c in counts.items():
            weight[gids.index(g), pids.index(p)] = c
        rows, cols = scipy.optimize.linear_sum_assignment(weight, maximize=True)
        idtp = int(weight[rows, cols].sum())
    total = num_gt + num_pred
    return {
        "idf1": 2 * idtp / total if total else 1.0,
        "idtp": idtp,
        "gt": num_gt,
        "pred": num_pred,
    }


# ----------------------------------------------------------------------------------- the command
def _check_settings(track_paths: list[str], threshold: float, max_gap: int | None) -> None:
    if not track_paths:
        raise RelinkError("No track files given: pass at least one with --tracks.")
    if threshold < 0 or (max_gap is not None and max_gap < 0):
        raise RelinkError(f"threshold ({threshold}) and max_gap ({max_gap}) must be >= 0.")
    if len({os.path.realpath(p) for p in track_paths}) != len(track_paths):
        raise RelinkError(f"A track file is given twice: {track_paths}.")


def _output_paths(paths: list[str], out_dir: str) -> list[str]:
    """Each input's path under out_dir, relative to the inputs' common folder."""
    absolute = [os.path.abspath(p) for p in paths]
    common = os.path.commonpath([os.path.dirname(p) for p in absolute])
    outs = [os.path.join(out_dir, os.path.relpath(p, common)) for p in absolute]
    for path, out in zip(absolute, outs, strict=True):
        if os.path.abspath(out) in absolute:
            raise RelinkError(f"--out_dir would overwrite the input {path}; choose another folder.")
    return outs


def _load_features(path: str) -> feature_file.TrackletFeatures:
    tracklets = feature_file.load(path)
    if len(tracklets) == 0:
        raise RelinkError(f"{path} holds no tracklets.")
    return tracklets


def _fragments(tracks: list[mot.MotTracks]) -> list[Fragment]:
    """One fragment per (file, track id), its camera unknown until a features row names it."""
    return [
        Fragment(fi, track_id, "", int(t.frames[idx].min()), int(t.frames[idx].max()))
        for fi, t in enumerate(tracks)
        for track_id, idx in t.track_rows().items()
    ]


def _same_file(a: str, b: str) -> bool:
    return a == b or os.path.realpath(a) == os.path.realpath(b)


def _match_features(
    fragments: list[Fragment],
    tracklets: feature_file.TrackletFeatures,
    track_paths: list[str],
    features_path: str,
) -> tuple[list[Fragment], dict[int, int]]:
    """Finds each features row's fragment.

    Returns the fragments with the cameras their rows give, and {fragment index: features row}.
    Raises RelinkError for a row whose track is not among the inputs and for two rows of one track.
    """
    fragments = list(fragments)
    where = {(f.file, f.track_id): i for i, f in enumerate(fragments)}
    rows: dict[int, int] = {}
    sources, track_ids = tracklets.sources, tracklets.track_ids
    for row, (source, track_id) in enumerate(zip(sources, track_ids, strict=True)):
        source, track_id = str(source), str(track_id)
        matching = [fi for fi, p in enumerate(track_paths) if _same_file(source, p)]
        if not matching:
            raise RelinkError(
                f"{features_path} row {row} comes from {source}, which is not among --tracks "
                f"{track_paths}: extract the features from the same track files."
            )
        try:
            i = where[matching[0], int(track_id)]
        except (KeyError, ValueError):
            raise RelinkError(
                f"{features_path} row {row} is track {track_id!r} of {source}, which that file "
                "does not have: extract the features from the same track files."
            ) from None
        if i in rows:
            raise RelinkError(
                f"{features_path} rows {rows[i]} and {row} are both track {track_id} of {source}."
            )
        rows[i] = row
        fragments[i] = dataclasses.replace(fragments[i], camera=str(tracklets.cameras[row]))
    if len(rows) < len(fragments):
        missing = len(fragments) - len(rows)
        logging.warning("%d tracks have no features row and stay unmerged.", missing)
    return fragments, rows


def _distances(features: np.ndarray, metric: str, normalize: bool) -> np.ndarray:
    distances = metrics.pairwise_distances(features, features, metric, normalize)
    return (distances + distances.T) / 2  # Exactly symmetric.


def _link_featured(
    fragments: list[Fragment],
    featured: list[int],
    distances: np.ndarray,
    threshold: float,
    max_gap: int | None,
    linkage: str,
) -> tuple[list[list[int]], list[dict]]:
    """`link` over the fragments that have features (`featured`, `distances` between them).

    Returns (groups, merges), both in fragment indices.
    """
    labels, merges = link(distances, [fragments[i] for i in featured], threshold, max_gap, linkage)
    groups = [
        [featured[i] for i in np.flatnonzero(labels == g)]
        for g in range(labels.max() + 1 if featured else 0)
    ]
    merges = [
        {
            "distance": m["distance"],
            "joined": [featured[i] for i in m["joined"]],
            "with": [featured[i] for i in m["with"]],
        }
        for m in merges
    ]
    return groups, merges


def _by_first_appearance(groups: list[list[int]], fragments: list[Fragment]) -> list[list[int]]:
    """The groups ordered by first frame (then file, then track id); group k gets the id k + 1."""
    first = lambda g: min((fragments[i].first, fragments[i].file, fragments[i].track_id) for i in g)
    return sorted(groups, key=first)


def _describe(f: Fragment, paths: list[str]) -> dict:
    return {
        "source": paths[f.file],
        "track_id": f.track_id,
        "camera": f.camera,
        "first_frame": f.first,
        "last_frame": f.last,
    }


def _outcome(
    fragments: list[Fragment],
    groups: list[list[int]],
    merges: list[dict],
    without_features: list[int],
    track_paths: list[str],
) -> dict:
    """The report's account of the linking: each merge (into which final group) and each group."""
    describe = lambda i: _describe(fragments[i], track_paths)
    group_of = {i: gid for gid, g in enumerate(groups, start=1) for i in g}
    return {
        "num_fragments": len(fragments),
        "num_groups": len(groups),
        "merges": [
            {
                "distance": m["distance"],
                "group": group_of[m["joined"][0]],
                "joined": [describe(i) for i in m["joined"]],
                "with": [describe(i) for i in m["with"]],
            }
            for m in merges
        ],
        "groups": [
            {"id": gid, "fragments": [describe(i) for i in g]}
            for gid, g in enumerate(groups, start=1)
        ],
        "without_features": [describe(i) for i in without_features],
    }


def _write(
    tracks: list[mot.MotTracks],
    outs: list[str],
    fragments: list[Fragment],
    groups: list[list[int]],
    report: dict,
    report_path: str,
) -> None:
    """Each track file rewritten with its group ids (1, 2, ... in `groups`' order), then the report."""
    new_id = {
        (fragments[i].file, fragments[i].track_id): gid
        for gid, group in enumerate(groups, start=1)
        for i in group
    }
    for fi, (t, out) in enumerate(zip(tracks, outs, strict=True)):
        mot.write(out, t, np.array([new_id[fi, int(i)] for i in t.ids], np.int64))
    files.write_json_atomic(report_path, report)


def relink(
    track_paths: list[str],
    features_path: str,
    out_dir: str,
    threshold: float,
    max_gap: int | None = None,
    linkage: str = "average",
    report_path: str | None = None,
) -> dict:
    """Re-links the tracks (module docstring); returns the report that it also writes."""
    _check_settings(track_paths, threshold, max_gap)
    outs = _output_paths(track_paths, out_dir)
    tracks = [mot.read(p) for p in track_paths]
    tracklets = _load_features(features_path)
    fragments, rows = _match_features(_fragments(tracks), tracklets, track_paths, features_path)
    featured = sorted(rows)
    unfeatured = [i for i in range(len(fragments)) if i not in rows]
    metric, normalize = gallery.distance_settings(tracklets)
    distances = _distances(tracklets.features[[rows[i] for i in featured]], metric, normalize)
    groups, merges = _link_featured(fragments, featured, distances, threshold, max_gap, linkage)
    groups = _by_first_appearance(groups + [[i] for i in unfeatured], fragments)
    report = {
        "tracks": list(track_paths),
        "features": features_path,
        "outputs": outs,
        "model": tracklets.model,
        "checkpoint": tracklets.checkpoint,
        "distance": metric,
        "normalize_features": normalize,
        "threshold": threshold,
        "max_gap": max_gap,
        "linkage": linkage,
        **_outcome(fragments, groups, merges, unfeatured, track_paths),
    }
    report_path = report_path or os.path.join(out_dir, "relink.json")
    _write(tracks, outs, fragments, groups, report, report_path)
    return report


FLAGS = flags.FLAGS


def _define_flags() -> None:
    # Defined only when run as a script, so importing this module never claims global flag names.
    flags.DEFINE_multi_string("tracks", [], "MOT track file(s) to re-link (repeat the flag).")
    flags.DEFINE_string("features", None, "Features file extracted from those track files.")
    flags.DEFINE_float("threshold", None, "Largest distance between merged groups.")
    flags.DEFINE_string("out_dir", None, "Folder for the rewritten track files.")
    flags.DEFINE_integer("max_gap", None, "Largest gap in frames inside a merged track.")
    flags.DEFINE_enum("linkage", "average", list(LINKAGES), "Distance between groups.")
    flags.DEFINE_string("report", None, "JSON report (default: <out_dir>/relink.json).")
    flags.mark_flags_as_required(["features", "threshold", "out_dir"])


def main(argv):
    tracks = list(FLAGS.tracks) + list(argv[1:])
    cli.start(tensorflow=False)
    report = relink(
        tracks, FLAGS.features, FLAGS.out_dir, FLAGS.threshold, FLAGS.max_gap,
        FLAGS.linkage, FLAGS.report,
    )  # fmt: skip
    print(
        f"{report['num_fragments']} tracks -> {report['num_groups']} after "
        f"{len(report['merges'])} merges: {FLAGS.out_dir}"
    )


def cli_main():
    """The `vreid-relink` console script."""
    cli.launch(main, _define_flags, verbosity=logging.WARNING)


if __name__ == "__main__":
    cli_main()
