"""LS-VID (Li et al., ICCV 2019): parser of the raw release into the canonical index.

Facts followed here (peer loaders such as BiCnet-TKS's): `list_sequence/list_seq_{train,test}.txt`
lines `<path prefix> <pid>`; a tracklet's frames are the files under `tracklet_{train,test}/` whose
path starts with the prefix, sorted by the frame number parsed from the name
(`a_b_<camera>_<frame>`, camera 1-15); `test/data/info_test.mat` is MATLAB v7.3 (HDF5) and its
`query` holds 1-based rows of the test list. Stored splits: `train`, `query`, `gallery` = the other
test rows (the evaluator may add the queries back, as for MARS). The validation lists are not used
(as in every peer).
"""

from __future__ import annotations

import functools
import os

import h5py
import numpy as np

from data_prep.index import BadInput, DataPrepError, DatasetIndex, Tracklet, check_frames, require

NAME = "lsvid"
IMAGE_FORMAT = "jpeg"
EXPECTED_TREE = """\
<manual_dir>/
  list_sequence/list_seq_train.txt  list_sequence/list_seq_test.txt   (`<path prefix> <pid>`)
  tracklet_train/<pid4>/...  tracklet_test/<pid4>/...
  test/data/info_test.mat   (MATLAB v7.3, `query`)"""
INSTRUCTIONS = f"""\
Request LS-VID from its authors and unpack it so that the manual folder reads:
{EXPECTED_TREE}
Frames are large crops: consider `--resize 256x128`."""

# Every published count is unverified (several loaders' docstrings are copied from MARS's),
# so nothing is checked; `data_prep.stats` prints what it finds.
VERIFIED_STATS: dict = {}
UNVERIFIED_STATS: dict = {}


def _read_list(path: str) -> list[tuple[str, int]]:
    rows = []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 2 or not fields[1].lstrip("-").isdigit():
                raise DataPrepError(
                    f"{path}, line {i + 1}: {line.strip()!r} is not '<prefix> <pid>'"
                )
            rows.append((fields[0], int(fields[1])))
    return rows


def _query_rows(path: str, num_test: int) -> set[int]:
    """0-based test rows of the v7.3 `query` index (stored 1-based)."""
    try:
        with h5py.File(path, "r") as f:
            rows = np.asarray(f["query"]).astype(np.int64).ravel() - 1
    except (OSError, KeyError) as e:
        raise DataPrepError(f"{path}: cannot read the MATLAB v7.3 variable 'query' ({e})") from None
    if rows.size and (rows.min() < 0 or rows.max() >= num_test):
        raise DataPrepError(f"{path}: query rows outside 1..{num_test}")
    return set(rows.tolist())


@functools.lru_cache(maxsize=4096)
def _listdir(folder: str) -> tuple[str, ...]:
    return tuple(sorted(os.listdir(folder))) if os.path.isdir(folder) else ()


def _row_tracklet(root, stem, list_file, row, prefix, pid, split, bad) -> Tracklet | None:
    where = f"{list_file}, line {row + 1} ({prefix!r}, pid {pid})"
    folder, base = os.path.split(os.path.join(root, prefix))
    parsed = []
    for name in _listdir(folder):
        if not name.startswith(base):
            continue
        fields = os.path.splitext(name)[0].split("_")
        if len(fields) != 4 or not (fields[2].isdigit() and fields[3].isdigit()):
            bad.report(f"{where}: {name!r} is not named a_b_<camera>_<frame>")
            return None
        parsed.append((int(fields[3]), int(fields[2]), os.path.join(folder, name)))
    parsed.sort()
    cams = {cam for _, cam, _ in parsed}
    if len(cams) > 1:
        bad.report(f"{where}: frames from several cameras {sorted(cams)}")
        return None
    why = check_frames(where, [p[0] for p in parsed])
    if why:
        bad.report(why)
        return None
    return Tracklet(
        key=f"{NAME}/{stem}/{prefix.split('/', 1)[-1].rstrip('_')}",
        split=split,
        pid=pid,
        camid=cams.pop() - 1,
        frame_paths=tuple(p[2] for p in parsed),
        frame_numbers=tuple(p[0] for p in parsed),
        source=where,
    )


def parse(root: str, *, skip_bad: bool = False) -> DatasetIndex:
    """Parses a raw LS-VID folder (see `EXPECTED_TREE`) into the canonical index."""
    bad = BadInput(skip_bad)
    tracklets = []
    for stem in ("train", "test"):
        require(os.path.join(root, f"tracklet_{stem}"), EXPECTED_TREE)
        list_file = require(
            os.path.join(root, "list_sequence", f"list_seq_{stem}.txt"), EXPECTED_TREE
        )
        rows = _read_list(list_file)
        query = set()
        if stem == "test":
            query = _query_rows(
                require(os.path.join(root, "test", "data", "info_test.mat"), EXPECTED_TREE),
                len(rows),
            )
        for row, (prefix, pid) in enumerate(rows):
            split = "train" if stem == "train" else ("query" if row in query else "gallery")
            t = _row_tracklet(root, stem, list_file, row, prefix, pid, split, bad)
            if t is not None:
                tracklets.append(t)
    _listdir.cache_clear()
    return DatasetIndex(NAME, tracklets, IMAGE_FORMAT, skipped=bad.skipped)
