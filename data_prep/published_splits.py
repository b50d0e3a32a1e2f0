"""The 10 published train/test splits of iLIDS-VID and PRID-2011 (Wang et al., ECCV 2014).

Both come as `ls_set` matrices (10 x N) of 1-based indices into the sorted list of the protocol's
persons; split i tests on the persons of the first half of row i and trains on the second half
(as torchreid's `prepare_split`). Splits are applied when reading, so the tracklets are stored once.
"""

from __future__ import annotations

import numpy as np
import scipy.io

from data_prep.index import DataPrepError
from data_prep.names import NUM_SPLITS


def load_ls_set_splits(path: str, persons: list[int]) -> list[dict[str, list[int]]]:
    """Reads `ls_set` from `path` and maps it onto `persons` (sorted pids).

    Returns:
      One `{'train': [pids], 'test': [pids]}` per split, pids sorted.

    Raises:
      DataPrepError: the file lacks `ls_set`, its shape disagrees with the person list, or a row
        is not a permutation of 1..N.
    """
    try:
        ls_set = np.asarray(scipy.io.loadmat(path)["ls_set"]).astype(np.int64)
    except KeyError:
        raise DataPrepError(f"{path}: no variable 'ls_set'") from None
    n = len(persons)
    if ls_set.shape != (NUM_SPLITS, n):
        raise DataPrepError(
            f"{path}: ls_set has shape {ls_set.shape}, expected ({NUM_SPLITS}, {n}) for the {n} "
            "persons of the protocol found on disk"
        )
    splits = []
    for i, row in enumerate(ls_set):
        if sorted(row.tolist()) != list(range(1, n + 1)):
            raise DataPrepError(f"{path}: ls_set row {i + 1} is not a permutation of 1..{n}")
        test, train = row[: n // 2], row[n // 2 :]
        splits.append(
            {
                "train": sorted(persons[j - 1] for j in train),
                "test": sorted(persons[j - 1] for j in test),
            }
        )
    return splits
