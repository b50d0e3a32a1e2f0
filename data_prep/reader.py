"""Reads built datasets back: one split as a `tf.data.Dataset`, and per-split summaries.

Elements of `read_split` are dicts with `frames` (tf.string [T], the original encoded bytes; TFDS
`SkipDecoding`, so callers decode only the frames they sample), `frame_numbers` int32 [T],
`num_frames` int32, `pid` int64 (raw: -1 junk, 0 distractor), `label` int64 (train: rank of the pid
among the sorted train pids; else -1), `camid` int32 (0-based), `tracklet_key` string, `is_junk`
and `is_distractor` bool, in tracklet-key order.

MARS and LS-VID galleries: the stored `gallery` is the test set minus the queries, junk INCLUDED
and flagged, so junk counts are preserved. The evaluator composes the gallery of its protocol:
official (MARS-evaluation, AP3D): query + gallery, junk dropped (11,310 MARS tracklets);
torchreid: gallery alone, junk dropped (9,330), where 140 MARS queries have no cross-camera match.
DukeMTMC-VideoReID: the stored gallery already contains every query tracklet, as released.

iLIDS-VID and PRID-2011 are stored once (`tracklets`) with their 10 published splits; split
`split_index` is applied here: train = both cameras of its train persons (labels among them),
query = camera 1 / cam_a and gallery = camera 2 / cam_b of its test persons.
"""

from __future__ import annotations

import numpy as np

from data_prep import registry
from data_prep.build import is_built
from data_prep.index import DataPrepError

SPLITS = ("train", "query", "gallery")
# Columns of the per-tracklet table stored in the dataset's metadata by the builder.
_KEY, _SPLIT, _PID, _CAMID, _LEN, _JUNK, _DISTRACTOR, _LABEL = range(8)

__all__ = [
    "SPLITS",
    "build_metadata",
    "is_built",
    "read_split",
    "split_columns",
    "split_table",
    "summary",
]


def _builder(dataset: str, data_dir: str):
    from data_prep.builders import BUILDERS  # noqa: PLC0415  (TFDS only when reading)

    if not is_built(dataset, data_dir):
        raise DataPrepError(
            f"{dataset!r} is not built in {data_dir!r}; run: python -m data_prep.build "
            f"--dataset {dataset} --manual_dir RAW --data_dir {data_dir}"
        )
    return BUILDERS[dataset](data_dir=data_dir)


def _check_split(dataset: str, split: str, split_index: int, metadata) -> dict | None:
    """Validates the request; returns the published split definition for multi-split datasets."""
    if split not in SPLITS:
        raise DataPrepError(f"Unknown split {split!r}; expected one of {SPLITS}")
    if dataset not in registry.MULTI_SPLIT:
        return None
    splits = metadata["splits"]
    if not 0 <= split_index < len(splits):
        raise DataPrepError(f"{dataset}: split_index {split_index} outside 0..{len(splits) - 1}")
    return splits[split_index]


def _members(split: str, definition: dict, pid: int, camid: int) -> bool:
    """Whether a stored tracklet of a multi-split dataset belongs to `split`."""
    if split == "train":
        return pid in definition["train"]
    return pid in definition["test"] and camid == (0 if split == "query" else 1)


def build_metadata(dataset: str, data_dir: str) -> dict:
    """The build's metadata: `resize`, `image_format`, `splits`, `skipped` and the tracklet table."""
    return dict(_builder(dataset, data_dir).info.metadata)


def _rows(dataset: str, metadata, split: str, split_index: int) -> list[list]:
    definition = _check_split(dataset, split, split_index, metadata)
    rows = metadata["tracklets"]
    if definition is None:
        return [list(r) for r in rows if r[_SPLIT] == split]
    rows = [list(r) for r in rows if _members(split, definition, r[_PID], r[_CAMID])]
    train = sorted(definition["train"])
    for r in rows:
        r[_LABEL] = train.index(r[_PID]) if split == "train" else -1
    return rows


def split_table(dataset: str, data_dir: str, split: str, *, split_index: int = 0) -> list[list]:
    """Per-tracklet rows `[key, split, pid, camid, num_frames, is_junk, is_distractor, label]` of a
    split, from the build's metadata (no shard is read), in key order."""
    return _rows(dataset, _builder(dataset, data_dir).info.metadata, split, split_index)


def split_columns(dataset: str, data_dir: str, split: str, *, split_index: int = 0) -> dict:
    """`split_table` as numpy arrays, in record order: `key` (str), `pid`, `camid`, `num_frames`,
    `is_junk`, `is_distractor`, `label`. What evaluation keeps of a tracklet, without reading a shard."""
    rows = split_table(dataset, data_dir, split, split_index=split_index)
    columns = (
        ("key", _KEY, str),
        ("pid", _PID, np.int64),
        ("camid", _CAMID, np.int32),
        ("num_frames", _LEN, np.int32),
        ("is_junk", _JUNK, bool),
        ("is_distractor", _DISTRACTOR, bool),
        ("label", _LABEL, np.int64),
    )
    return {name: np.array([r[i] for r in rows], dtype) for name, i, dtype in columns}


def read_split(dataset: str, data_dir: str, split: str, *, split_index: int = 0):
    """Returns split `split` of a built dataset as a `tf.data.Dataset` (see the module docstring).

    Args:
      dataset: 'mars', 'dukev', 'ilidsvid', 'prid2011' or 'lsvid'.
      data_dir: the TFDS data folder given to `data_prep.build`.
      split: 'train', 'query' or 'gallery'.
      split_index: iLIDS-VID/PRID-2011 only: which published split (0-9).
    """
    import tensorflow as tf  # noqa: PLC0415
    import tensorflow_datasets as tfds  # noqa: PLC0415

    builder = _builder(dataset, data_dir)
    definition = _check_split(dataset, split, split_index, builder.info.metadata)
    decoders = {"frames": tfds.decode.SkipDecoding()}
    stored = "tracklets" if definition is not None else split
    ds = builder.as_dataset(split=stored, decoders=decoders, shuffle_files=False)
    if definition is None:
        return ds
    train = tf.constant(sorted(definition["train"]) or [-2], tf.int64)
    test = tf.constant(sorted(definition["test"]) or [-2], tf.int64)
    query_cam = 0 if split == "query" else 1

    def keep(ex):
        if split == "train":
            return tf.reduce_any(tf.equal(train, ex["pid"]))
        return tf.reduce_any(tf.equal(test, ex["pid"])) & tf.equal(ex["camid"], query_cam)

    def relabel(ex):
        label = tf.argmax(tf.cast(tf.equal(train, ex["pid"]), tf.int64), output_type=tf.int64)
        return {**ex, "label": label if split == "train" else tf.constant(-1, tf.int64)}

    return ds.filter(keep).map(relabel)


def summary(dataset: str, data_dir: str, split_index: int = 0) -> list[dict]:
    """Per-split statistics of a built dataset, from its metadata (no shard is read).

    Returns:
      One dict per split: `split`, `ids` (distinct pids, junk -1 not counted, distractor 0 counted),
      `tracklets`, `frames`, `min_len`, `mean_len`, `max_len`, `cameras`, `junk`, `distractors`.
    """
    metadata = _builder(dataset, data_dir).info.metadata
    rows = []
    for split in SPLITS:
        table = _rows(dataset, metadata, split, split_index)
        lengths = np.array([r[_LEN] for r in table], np.int64)
        rows.append(
            {
                "split": split,
                "ids": len({r[_PID] for r in table if not r[_JUNK]}),
                "tracklets": len(table),
                "frames": int(lengths.sum()),
                "min_len": int(lengths.min()) if len(table) else 0,
                "mean_len": float(lengths.mean()) if len(table) else 0.0,
                "max_len": int(lengths.max()) if len(table) else 0,
                "cameras": len({r[_CAMID] for r in table}),
                "junk": sum(bool(r[_JUNK]) for r in table),
                "distractors": sum(bool(r[_DISTRACTOR]) for r in table),
            }
        )
    return rows
