"""A searchable gallery of tracklet features, and exact k-nearest-neighbour search over it.

The index file. One `.npz`: a features file (`feature_file`, same keys, readable by
`feature_file.load`) whose rows are every added file's rows in the order they were added, plus one
more key, `gallery`: a JSON string `{"format": 1, "parts": [{"file", "rows"}, ...]}` recording the
features files added and how many rows each brought. All rows come from one model and checkpoint
(`TrackletFeatures.check_compatible`); a tracklet (same source, track id and camera) is never added
twice. The file is written atomically, so an interrupted `add` leaves the previous index intact.
A plain features file is accepted wherever an index is read (a gallery of one part).

Search. Distances follow evaluation exactly: `metrics.pairwise_distances` with the run's
`config.eval.distance` and `config.eval.normalize_features` (from the features' provenance), ties
broken by gallery row. The exact backend runs over the gallery in fixed-size chunks (bounded memory
whatever the gallery size) and keeps a running top k. The 'faiss' backend (optional: the `faiss`
extra) uses the exact flat indexes, IndexFlatL2 for 'euclidean' and IndexFlatIP for 'cosine', on
the same (normalised) features, and gives the same neighbours and distances up to float rounding;
it does not persist anything (a flat index is the feature matrix itself).
"""

from __future__ import annotations

import dataclasses
import json
import zipfile

import numpy as np
from absl import logging

from vreid_jax.deploy.tracks import feature_file
from vreid_jax.deploy.tracks.feature_file import FeatureFileError, TrackletFeatures
from vreid_jax.evaluation import metrics

FORMAT = 1
BACKENDS = ("exact", "faiss")
# What evaluation uses when a features file's provenance does not say (configs/default.py).
DEFAULT_DISTANCE, DEFAULT_NORMALIZE = "euclidean", True
# Exact search: gallery rows per chunk, and query rows per block so that one block of distances
# stays below about 256 MB.
GALLERY_CHUNK = 1 << 16
_BLOCK_ENTRIES = 1 << 26


@dataclasses.dataclass
class Gallery:
    """The rows of an index and the features files they came from ({"file", "rows"} each)."""

    tracklets: TrackletFeatures
    parts: list[dict]

    def __len__(self) -> int:
        return len(self.tracklets)


def keys(tracklets: TrackletFeatures) -> list[tuple[str, str, str]]:
    """What identifies each row's tracklet: (source, track id, camera)."""
    return list(zip(tracklets.sources, tracklets.track_ids, tracklets.cameras, strict=True))


def _read_part(path: str) -> TrackletFeatures:
    part = feature_file.load(path)
    if len(part) == 0:
        raise FeatureFileError(f"{path} holds no tracklets: nothing to add to an index.")
    return part


def add(gallery: Gallery | None, paths: list[str]) -> Gallery:
    """`gallery` (None: an empty one) with the rows of the features files `paths` appended.

    Raises FeatureFileError for a missing, empty or unreadable file, one from another model or
    checkpoint, or a tracklet already in the index.
    """
    if not paths:
        raise FeatureFileError("No features files given: pass at least one with --features.")
    parts = [] if gallery is None else [gallery.tracklets]
    names = [] if gallery is None else ["the index"]
    records = [] if gallery is None else list(gallery.parts)
    where = {} if gallery is None else dict.fromkeys(keys(gallery.tracklets), "the index")
    for path in paths:
        part = _read_part(path)
        if parts:
            parts[0].check_compatible(part, names[0], path)
        for row, key in enumerate(keys(part)):
            if key in where:
                raise FeatureFileError(
                    f"{path} row {row} (track {key[1]!r}, camera {key[2]!r}, source {key[0]!r}) "
                    f"is already in {where[key]}: a tracklet is added to an index once."
                )
            where[key] = path
        parts.append(part)
        names.append(path)
        records.append({"file": path, "rows": len(part)})
    return Gallery(feature_file.concatenate(parts), records)


def build(paths: list[str]) -> Gallery:
    """A gallery of the rows of the features files `paths`, in order."""
    return add(None, paths)


def save(path: str, gallery: Gallery) -> None:
    """Writes the index to `path` (.npz) atomically; see the module docstring for the format."""
    feature_file.save(
        path, gallery.tracklets, extra={"gallery": {"format": FORMAT, "parts": gallery.parts}}
    )


def load(path: str) -> Gallery:
    """Reads an index (or a plain features file, as a gallery of one part)."""
    tracklets = feature_file.load(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            info = json.loads(str(data["gallery"])) if "gallery" in data.files else None
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise FeatureFileError(f"{path}: unreadable gallery record ({e}).") from None
    if info is None:
        return Gallery(tracklets, [{"file": path, "rows": len(tracklets)}])
    if info.get("format") != FORMAT or sum(p["rows"] for p in info["parts"]) != len(tracklets):
        raise FeatureFileError(
            f"{path}: its gallery record {info} does not describe its {len(tracklets)} rows "
            f"(format {FORMAT} expected); rebuild it with `vreid-search build`."
        )
    return Gallery(tracklets, info["parts"])


# ------------------------------------------------------------------------------------------ search
def distance_settings(tracklets: TrackletFeatures) -> tuple[str, bool]:
    """(distance, normalize_features) of the run the features came from, as evaluation uses them."""
    eval_config = tracklets.provenance.get("config", {}).get("eval", {})
    if "distance" not in eval_config or "normalize_features" not in eval_config:
        logging.warning(
            "The features' provenance has no config.eval.distance / normalize_features: using "
            "evaluation's defaults (%s, normalised=%s).",
            DEFAULT_DISTANCE,
            DEFAULT_NORMALIZE,
        )
    distance = eval_config.get("distance", DEFAULT_DISTANCE)
    if distance not in metrics.DISTANCES:
        raise FeatureFileError(
            f"The features' provenance names distance {distance!r}; expected one of "
            f"{metrics.DISTANCES}."
        )
    return distance, bool(eval_config.get("normalize_features", DEFAULT_NORMALIZE))


def _merge_top_k(best_d, best_i, d, i, k):
    """Row-wise k smallest of two candidate sets, ordered by (distance, gallery row)."""
    d, i = np.concatenate([best_d, d], axis=1), np.concatenate([best_i, i], axis=1)
    order = np.lexsort((i, d), axis=1)[:, :k]
    return np.take_along_axis(d, order, 1), np.take_along_axis(i, order, 1)


def _exact(queries, gallery, k, metric, normalize, chunk):
    num_q, num_g = len(queries), len(gallery)
    best_d = np.full((num_q, 0), np.inf, np.float32)
    best_i = np.zeros((num_q, 0), np.int64)
    chunk = min(chunk, num_g)
    block = max(1, min(num_q, _BLOCK_ENTRIES // chunk))
    for start in range(0, num_g, chunk):
        part = gallery[start : start + chunk]
        real = len(part)
        if real < chunk:  # Same shape for every chunk: the distance function compiles once.
            part = np.pad(part, ((0, chunk - real), (0, 0)))
        d = metrics.pairwise_distances(queries, part, metric, normalize, block_size=block)
        d = d[:, :real]
        take = min(k, real)
        cand = np.argpartition(d, take - 1, axis=1)[:, :take] if take < real else None
        if cand is None:
            cand = np.broadcast_to(np.arange(real), (num_q, real))
        cand_d = np.take_along_axis(d, cand, 1)
        best_d, best_i = _merge_top_k(best_d, best_i, cand_d, cand + start, k)
    return best_d, best_i


def _normalised(x: np.ndarray) -> np.ndarray:
    # The same epsilon as metrics (torch's normalize): a zero feature stays zero.
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norm, metrics._NORM_EPS)).astype(np.float32)


class FaissIndex:
    """An exact faiss flat index over (normalised) gallery features, answering in our distances."""

    def __init__(self, gallery: np.ndarray, metric: str, normalize: bool):
        try:
            import faiss  # noqa: PLC0415  (optional: the `faiss` extra)
        except ImportError:
            raise FeatureFileError(
                "--backend=faiss needs faiss: pip install -e '.[deploy]' (or faiss-cpu)."
            ) from None
        self.metric = metric
        self.normalize = normalize or metric == "cosine"
        gallery = np.ascontiguousarray(gallery, np.float32)
        if self.normalize:
            gallery = _normalised(gallery)
        dim = gallery.shape[1]
        self.index = faiss.IndexFlatIP(dim) if metric == "cosine" else faiss.IndexFlatL2(dim)
        self.index.add(gallery)

    def search(self, queries: np.ndarray, k: int):
        queries = np.ascontiguousarray(queries, np.float32)
        if self.normalize:
            queries = _normalised(queries)
        d, i = self.index.search(queries, k)
        d = 1.0 - d if self.metric == "cosine" else np.sqrt(np.maximum(d, 0.0))
        return d.astype(np.float32), i.astype(np.int64)


def search(
    queries: np.ndarray,
    gallery: np.ndarray,
    k: int,
    metric: str = DEFAULT_DISTANCE,
    normalize: bool = DEFAULT_NORMALIZE,
    backend: str = "exact",
    chunk: int = GALLERY_CHUNK,
) -> tuple[np.ndarray, np.ndarray]:
    """The k nearest gallery rows of every query: (distances float32 [Nq, k'], rows int64 [Nq, k']),
    nearest first, k' = min(k, gallery size); ties (exact backend) by gallery row, as evaluation."""
    if backend not in BACKENDS:
        raise FeatureFileError(f"Unknown search backend {backend!r}; expected one of {BACKENDS}.")
    if k < 1:
        raise FeatureFileError(f"top_k must be >= 1, got {k}.")
    queries, gallery = np.asarray(queries, np.float32), np.asarray(gallery, np.float32)
    k = min(k, len(gallery))
    if len(queries) == 0 or k == 0:
        return np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
    if backend == "faiss":
        return FaissIndex(gallery, metric, normalize).search(queries, k)
    return _exact(queries, gallery, k, metric, normalize, chunk)


def rerank_top_k(queries, gallery, k, metric, normalize, **rerank_args):
    """Top k after k-reciprocal re-ranking (`metrics.re_ranking`, on the whole gallery), with the
    same power convention as evaluation (squared Euclidean distances)."""
    dist = lambda a, b: metrics.pairwise_distances(a, b, metric, normalize)
    power = 2 if metric == "euclidean" else 1
    reranked = metrics.re_ranking(
        dist(queries, gallery) ** power,
        dist(queries, queries) ** power,
        dist(gallery, gallery) ** power,
        **rerank_args,
    )
    k = min(k, len(gallery))
    order = np.argsort(reranked, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(reranked, order, 1), order
