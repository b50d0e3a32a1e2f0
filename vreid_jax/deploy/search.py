r"""Search your own tracklets: a gallery index of features files, queried for the nearest tracklets.

  vreid-search build --index G.npz --features a.npz [--features b.npz | b.npz ...]
  vreid-search add   --index G.npz --features c.npz
  vreid-search query --index G.npz --features q.npz [--rows 0,3 | --track_ids 7,12] \
      --top_k 10 --out results.json|results.csv [--picture ranked.png] [--rerank] \
      [--backend exact|faiss] [--noexclude_self]

Features files come from `vreid-extract`. Distances are evaluation's (the run's
`config.eval.distance` and `normalize_features`, `vreid_jax.deploy.tracks.gallery`). The index and the
queries must come from the same model and checkpoint. Every output is written atomically: after a
failure, no partial index, results or picture is left behind.

Results: JSON `{"index", "queries", "model", "checkpoint", "distance", "normalize_features",
"reranked", "backend", "top_k", "results": [{"query": {...}, "matches": [{"rank", ...,
"distance"}]}]}`, or CSV with one line per (query, rank) and the columns `CSV_COLUMNS`. With
`--rerank`, `distance` is the k-reciprocal re-ranked distance.

The ranked-list picture (`--picture`): one PNG per query (`ranked.png` for one query,
`ranked_q<row>.png` for several): the query's preview frames, then the top k, each cropped to its
person box. User tracklets have no ground-truth identity, so every match is framed in neutral grey
(`pictures.NEUTRAL_COLOR`), never green or red. Video frames ('<video>#<index>') need PyAV (`pip install
av`).
"""

from __future__ import annotations

import csv
import os

import numpy as np
from absl import flags, logging

from vreid_jax import cli, errors, files
from vreid_jax.deploy.tracks import feature_file, gallery, sources
from vreid_jax.deploy.tracks.feature_file import TrackletFeatures
from vreid_jax.evaluation import pictures

COMMANDS = ("build", "add", "query")
# Re-ranking needs the full gallery x gallery distance matrix: refused above this size.
MAX_RERANK_GALLERY = 20_000
CSV_COLUMNS = (
    "query_row",
    "query_track_id",
    "query_camera",
    "query_source",
    "rank",
    "gallery_row",
    "gallery_track_id",
    "gallery_camera",
    "gallery_source",
    "gallery_first_frame",
    "gallery_last_frame",
    "distance",
)


class SearchError(errors.UserError):
    """A search request that cannot be served (bad arguments, unreadable frames)."""


# ------------------------------------------------------------------------------------- commands
def build(index_path: str, features: list[str]) -> gallery.Gallery:
    """Builds an index from features files and writes it to `index_path`."""
    index = gallery.build(features)
    gallery.save(index_path, index)
    return index


def add(index_path: str, features: list[str]) -> gallery.Gallery:
    """Appends the rows of features files to the index at `index_path` (rewritten atomically)."""
    if not os.path.isfile(index_path):
        raise SearchError(
            f"{index_path}: no such index; create it with `vreid-search build`."
        )
    index = gallery.add(gallery.load(index_path), features)
    gallery.save(index_path, index)
    return index


def select_queries(queries: TrackletFeatures, rows=None, track_ids=None) -> np.ndarray:
    """Row numbers of the chosen queries: `rows`, or the rows whose track id is in `track_ids`,
    or all rows."""
    if rows and track_ids:
        raise SearchError("Choose queries by --rows or by --track_ids, not both.")
    if rows:
        picked = np.asarray([int(r) for r in rows], np.int64)
        bad = picked[(picked < 0) | (picked >= len(queries))]
        if bad.size:
            raise SearchError(
                f"--rows {bad.tolist()} out of range: the query file has {len(queries)} rows."
            )
        return picked
    if track_ids:
        wanted = [str(t) for t in track_ids]
        missing = sorted(set(wanted) - set(queries.track_ids.tolist()))
        if missing:
            raise SearchError(f"--track_ids {missing} are not in the query file.")
        return np.flatnonzero(np.isin(queries.track_ids, wanted))
    return np.arange(len(queries))


def _describe(tracklets: TrackletFeatures, row: int) -> dict:
    return {
        "row": int(row),
        "track_id": str(tracklets.track_ids[row]),
        "camera": str(tracklets.cameras[row]),
        "source": str(tracklets.sources[row]),
        "first_frame": int(tracklets.first_frame[row]),
        "last_frame": int(tracklets.last_frame[row]),
    }


def rank(
    index: gallery.Gallery,
    queries: TrackletFeatures,
    rows: np.ndarray,
    top_k: int,
    backend: str = "exact",
    rerank: bool = False,
    exclude_self: bool = True,
) -> dict:
    """The top-k gallery rows of each chosen query row, as the JSON record (module docstring).

    `exclude_self` drops gallery rows that are the query tracklet itself (same source, track id and
    camera: a query file that is also in the index).
    """
    g = index.tracklets
    g.check_compatible(queries, "the index", "the query file")
    if len(g) == 0:
        raise SearchError("The index holds no tracklets.")
    metric, normalize = gallery.distance_settings(g)
    qf = queries.features[rows]
    # How many extra neighbours to fetch so that `top_k` remain after dropping the query itself.
    g_keys = {}
    for i, key in enumerate(gallery.keys(g)):
        g_keys.setdefault(key, []).append(i)
    all_q_keys = gallery.keys(queries)
    q_keys = [all_q_keys[r] for r in rows]
    extra = max((len(g_keys.get(key, ())) for key in q_keys), default=0) if exclude_self else 0
    if rerank:
        if len(g) > MAX_RERANK_GALLERY:
            raise SearchError(
                f"--rerank needs the full {len(g)} x {len(g)} gallery distance matrix; it is "
                f"limited to galleries of at most {MAX_RERANK_GALLERY} tracklets."
            )
        dist, idx = gallery.rerank_top_k(qf, g.features, top_k + extra, metric, normalize)
    else:
        dist, idx = gallery.search(qf, g.features, top_k + extra, metric, normalize, backend)
    results = []
    for n, row in enumerate(rows):
        own = set(g_keys.get(q_keys[n], ())) if exclude_self else set()
        keep = [j for j in range(idx.shape[1]) if int(idx[n, j]) not in own][:top_k]
        matches = [
            {"rank": r, **_describe(g, int(idx[n, j])), "distance": float(dist[n, j])}
            for r, j in enumerate(keep, start=1)
        ]
        results.append({"query": _describe(queries, int(row)), "matches": matches})
    return {
        "model": g.model,
        "checkpoint": g.checkpoint,
        "distance": metric,
        "normalize_features": normalize,
        "reranked": bool(rerank),
        "backend": "exact" if rerank else backend,
        "top_k": top_k,
        "results": results,
    }


def write_results(path: str, record: dict) -> None:
    """Writes the results as JSON (`.json`) or CSV (`.csv`), atomically."""
    if path.endswith(".json"):
        files.write_json_atomic(path, record)
        return
    if not path.endswith(".csv"):
        raise SearchError(f"--out {path!r}: expected a .json or .csv file name.")
    with files.atomic_write(path) as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        for result in record["results"]:
            q = result["query"]
            for m in result["matches"]:
                writer.writerow(
                    [q["row"], q["track_id"], q["camera"], q["source"], m["rank"], m["row"]]
                    + [m["track_id"], m["camera"], m["source"], m["first_frame"], m["last_frame"]]
                    + [f"{m['distance']:.6f}"]
                )


# ------------------------------------------------------------------------------------- pictures
def _decode_video_frames(video: str, wanted: set[int]) -> dict[int, np.ndarray]:
    try:
        out = dict(sources.video_frames(video, wanted))
    except sources.TrackletSourceError as e:
        raise SearchError(f"Preview frames of {video} cannot be drawn: {e}") from None
    missing = sorted(wanted - set(out))
    if missing:
        raise SearchError(f"{video} has no frames {missing} (0-based) to preview.")
    return out


def _crop(image: np.ndarray, box: np.ndarray) -> np.ndarray:
    """The box (x, y of its top-left pixel, 0-based, as the features file records it; w, h) cut
    from the image, clipped to it; the whole image for a NaN box."""
    if not np.all(np.isfinite(box)):
        return image
    h, w = image.shape[:2]
    x0, y0 = int(round(box[0])), int(round(box[1]))
    x1, y1 = x0 + max(1, int(round(box[2]))), y0 + max(1, int(round(box[3])))
    x0, y0, x1, y1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
    if x1 <= x0 or y1 <= y0:
        return image
    return image[y0:y1, x0:x1]


def preview_frames(tracklets: TrackletFeatures, rows) -> dict[int, list[np.ndarray]]:
    """Each row's preview frames (uint8 HxWx3, cropped to the person box), each video decoded once."""
    refs = {}  # row -> [(kind, path, index, box)]
    wanted = {}  # video -> frame indices
    for row in rows:
        refs[row] = []
        for ref, box in zip(
            tracklets.preview_frames[row], tracklets.preview_boxes[row], strict=True
        ):
            if not ref:
                continue
            path, sep, index = ref.rpartition("#")
            if sep and index.isdigit():
                wanted.setdefault(path, set()).add(int(index))
                refs[row].append(("video", path, int(index), box))
            else:
                refs[row].append(("image", ref, None, box))
        if not refs[row]:
            raise SearchError(
                f"Tracklet {tracklets.track_ids[row]!r} ({tracklets.sources[row]}) has no preview "
                "frames to draw."
            )
    decoded = {video: _decode_video_frames(video, idx) for video, idx in wanted.items()}
    out = {}
    for row, items in refs.items():
        out[row] = []
        for kind, path, index, box in items:
            if kind == "video":
                image = decoded[path][index]
            else:
                try:
                    from PIL import Image  # noqa: PLC0415

                    with Image.open(path) as im:
                        image = np.asarray(im.convert("RGB"))
                except OSError as e:
                    raise SearchError(f"Cannot read preview frame {path}: {e}") from None
            out[row].append(np.ascontiguousarray(_crop(image, box)))
    return out


def save_pictures(path: str, index: gallery.Gallery, queries: TrackletFeatures, record: dict):
    """One ranked-list PNG per query (module docstring); returns the paths written."""
    results = record["results"]
    q_frames = preview_frames(queries, sorted({r["query"]["row"] for r in results}))
    g_rows = sorted({m["row"] for r in results for m in r["matches"]})
    g_frames = preview_frames(index.tracklets, g_rows)
    stem, ext = os.path.splitext(path)
    written = []
    for result in results:
        q = result["query"]
        out = path if len(results) == 1 else f"{stem}_q{q['row']}{ext or '.png'}"
        entries = [
            (
                g_frames[m["row"]],
                None,
                f"{m['track_id']} cam {m['camera']}\nd={m['distance']:.3f}",
            )
            for m in result["matches"]
        ]
        pictures.save_ranked_list(
            out, q_frames[q["row"]], f"query {q['track_id']} cam {q['camera']}", entries
        )
        written.append(out)
    return written


def query(
    index_path: str,
    features: str,
    out: str,
    rows=None,
    track_ids=None,
    top_k: int = 10,
    backend: str = "exact",
    rerank: bool = False,
    exclude_self: bool = True,
    picture: str | None = None,
) -> dict:
    """Ranks the chosen query tracklets against the index and writes the results (and pictures)."""
    if not out.endswith((".json", ".csv")):
        raise SearchError(f"--out {out!r}: expected a .json or .csv file name.")
    if len(features) != 1:
        raise SearchError(f"query takes one --features file (the queries), got {len(features)}.")
    if not os.path.isfile(index_path):
        raise SearchError(f"{index_path}: no such index.")
    index = gallery.load(index_path)
    queries = feature_file.load(features[0])
    if len(queries) == 0:
        raise SearchError(f"{features[0]} holds no tracklets to query with.")
    chosen = select_queries(queries, rows, track_ids)
    record = {"index": index_path, "queries": features[0]}
    record.update(rank(index, queries, chosen, top_k, backend, rerank, exclude_self))
    if picture:  # Drawn first: a missing frame fails before any result is written.
        save_pictures(picture, index, queries, record)
    write_results(out, record)
    return record


# ------------------------------------------------------------------------------------------ CLI
FLAGS = flags.FLAGS


def _define_flags() -> None:
    # Defined only when run as a script, so importing this module never claims global flag names.
    flags.DEFINE_string("index", None, "The gallery index file (.npz).")
    flags.DEFINE_multi_string("features", [], "Features file(s) from vreid_jax.deploy.extract.")
    flags.DEFINE_list("rows", [], "query: query rows (0-based) of the --features file.")
    flags.DEFINE_list("track_ids", [], "query: query tracklets by track id.")
    flags.DEFINE_integer("top_k", 10, "query: gallery tracklets per query.")
    flags.DEFINE_string("out", None, "query: results file, .json or .csv.")
    flags.DEFINE_string("picture", None, "query: ranked-list PNG (one per query).")
    flags.DEFINE_bool("rerank", False, "query: k-reciprocal re-ranking (small galleries).")
    flags.DEFINE_enum("backend", "exact", list(gallery.BACKENDS), "query: search backend.")
    flags.DEFINE_bool("exclude_self", True, "query: never return the query tracklet itself.")
    flags.mark_flag_as_required("index")


def main(argv):
    usage = "Usage: vreid-search {build,add,query} --index G.npz --features F.npz ..."
    if len(argv) < 2 or argv[1] not in COMMANDS:
        raise SearchError(f"expected a command, one of {COMMANDS}.\n{usage}")
    command, features = argv[1], list(FLAGS.features) + list(argv[2:])
    cli.start(tensorflow=False)
    if command == "query":
        if not FLAGS.out:
            raise SearchError("query needs --out results.json or results.csv.")
        record = query(
            FLAGS.index, features, FLAGS.out, FLAGS.rows, FLAGS.track_ids, FLAGS.top_k,
            FLAGS.backend, FLAGS.rerank, FLAGS.exclude_self, FLAGS.picture,
        )  # fmt: skip
        print(f"{len(record['results'])} queries ranked: {FLAGS.out}")
    else:
        index = (build if command == "build" else add)(FLAGS.index, features)
        print(f"{FLAGS.index}: {len(index)} tracklets from {len(index.parts)} features files")


def cli_main():
    """The `vreid-search` console script."""
    cli.launch(main, _define_flags, verbosity=logging.WARNING)


if __name__ == "__main__":
    cli_main()
