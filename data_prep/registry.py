"""Dataset name -> parser module, and the one place that finishes a parsed index.

Each parser module exposes `NAME`, `IMAGE_FORMAT`, `EXPECTED_TREE`, `INSTRUCTIONS`,
`VERIFIED_STATS`, `UNVERIFIED_STATS` and `parse(root, *, skip_bad) -> DatasetIndex`.
"""

from __future__ import annotations

from data_prep import dukev, ilidsvid, lsvid, mars, prid2011
from data_prep.index import DataPrepError, DatasetIndex, unique_keys, with_train_labels

DATASETS = {m.NAME: m for m in (mars, dukev, ilidsvid, prid2011, lsvid)}
# Datasets stored as all tracklets plus 10 published splits applied when reading.
MULTI_SPLIT = ("ilidsvid", "prid2011")


def get(name: str):
    """Returns the parser module of dataset `name`, or raises naming the valid ones."""
    if name not in DATASETS:
        raise DataPrepError(f"Unknown dataset {name!r}; expected one of {sorted(DATASETS)}")
    return DATASETS[name]


def stored_splits(name: str) -> tuple[str, ...]:
    """The TFDS splits a built dataset holds."""
    return ("tracklets",) if name in MULTI_SPLIT else ("train", "query", "gallery")


def parse(name: str, root: str, *, skip_bad: bool = False) -> DatasetIndex:
    """Parses raw dataset `name` under `root`: unique keys, train labels, tracklets sorted by key."""
    index = get(name).parse(root, skip_bad=skip_bad)
    index.tracklets = sorted(with_train_labels(unique_keys(index.tracklets)), key=lambda t: t.key)
    if not index.tracklets:
        raise DataPrepError(f"{root}: no usable tracklet found for {name!r}")
    return index
