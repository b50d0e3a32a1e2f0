"""Dataset name -> parser module, and the one place that finishes a parsed index.

Each parser module exposes `NAME`, `IMAGE_FORMAT`, `EXPECTED_TREE`, `INSTRUCTIONS`,
`VERIFIED_STATS`, `UNVERIFIED_STATS` and `parse(root, *, skip_bad) -> DatasetIndex`.
"""

from __future__ import annotations

import concurrent.futures
import importlib
import os

import tqdm

from data_prep.index import (
    BadInput,
    DataPrepError,
    DatasetIndex,
    Tracklet,
    first_bad_image,
    unique_keys,
    with_train_labels,
)
from data_prep.names import GALLERY_WITHOUT_QUERIES, MULTI_SPLIT, NAMES

# Name -> parser module `data_prep.<name>`, in the order of `NAMES`.
DATASETS = {name: importlib.import_module(f"data_prep.{name}") for name in NAMES}
assert all(name == module.NAME for name, module in DATASETS.items())

# The names and storage facts are re-exported from `data_prep.names`, their one definition.
__all__ = ["DATASETS", "GALLERY_WITHOUT_QUERIES", "MULTI_SPLIT", "NAMES"]
__all__ += ["get", "parse", "stored_splits"]


def get(name: str):
    """Returns the parser module of dataset `name`, or raises naming the valid ones."""
    if name not in DATASETS:
        raise DataPrepError(f"Unknown dataset {name!r}; expected one of {sorted(DATASETS)}")
    return DATASETS[name]


def stored_splits(name: str) -> tuple[str, ...]:
    """The TFDS splits a built dataset holds."""
    return ("tracklets",) if name in MULTI_SPLIT else ("train", "query", "gallery")


def _with_good_images(index: DatasetIndex, skip_bad: bool) -> list[Tracklet]:
    """Drops (or fails on) tracklets with a missing, non-image, truncated or undecodable frame.

    Every frame is decoded; the tracklets are checked on all cores (PIL decodes without the GIL).
    """
    bad = BadInput(skip_bad)
    good = []
    check = lambda t: first_bad_image(t.frame_paths, index.image_format)
    pool = concurrent.futures.ThreadPoolExecutor(os.cpu_count())
    try:
        results = pool.map(check, index.tracklets)
        progress = tqdm.tqdm(
            zip(index.tracklets, results, strict=True),
            total=len(index.tracklets),
            desc=f"Checking {index.name} frames",
            unit=" tracklets",
        )
        for t, why in progress:
            if why:
                bad.report(f"{t.source}: {why}")
            else:
                good.append(t)
    finally:
        pool.shutdown(cancel_futures=True)  # A first bad frame stops the check at once.
    index.skipped.extend(bad.skipped)
    return good


def parse(name: str, root: str, *, skip_bad: bool = False) -> DatasetIndex:
    """Parses raw dataset `name` under `root`: checks every frame file, makes keys unique, sets
    the train labels (after any skips, so they stay dense) and sorts the tracklets by key."""
    index = get(name).parse(root, skip_bad=skip_bad)
    tracklets = _with_good_images(index, skip_bad)
    index.tracklets = sorted(with_train_labels(unique_keys(tracklets)), key=lambda t: t.key)
    if not index.tracklets:
        raise DataPrepError(f"{root}: no usable tracklet found for {name!r}")
    return index
