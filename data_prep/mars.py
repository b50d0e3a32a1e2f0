"""MARS (Zheng et al., ECCV 2016): parser of the raw release into the canonical tracklet index.

Facts followed here (the release and `liangzheng06/MARS-evaluation`): frame names
`0001C1T0001F001.jpg` (pid `[0:4]`, `00-1` junk, `0000` distractor; camera `[5]`, 1-6; tracklet
`[7:11]`; frame `[12:15]`), name lists written by MATLAB with `\\r\\n` line ends,
`tracks_{train,test}_info.mat` rows `[start, end, pid, camid]` with 1-based inclusive `start`/`end`
into the name list, `query_IDX.mat` 1-based rows of the test table. Stored splits: `train`; `query`
(the `query_IDX` rows); `gallery` = the other test rows, junk included and flagged (the evaluator
composes the official or the torchreid gallery).
"""

from __future__ import annotations

import os
import re

import numpy as np
import scipy.io

from data_prep.index import BadInput, DataPrepError, DatasetIndex, Tracklet, check_frames, require

NAME = "mars"
IMAGE_FORMAT = "jpeg"
EXPECTED_TREE = """\
<manual_dir>/
  bbox_train/0001/0001C1T0001F001.jpg ...   (625 pid folders)
  bbox_test/00-1/  bbox_test/0000/  bbox_test/0002/ ...
  info/train_name.txt  info/test_name.txt
  info/tracks_train_info.mat  info/tracks_test_info.mat  info/query_IDX.mat
(`info/` comes from https://github.com/liangzheng06/MARS-evaluation/tree/master/info)"""
INSTRUCTIONS = f"""\
Download bbox_train.zip and bbox_test.zip from the MARS authors and the `info/` folder of
liangzheng06/MARS-evaluation, and unpack them so that the manual folder reads:
{EXPECTED_TREE}"""

# Verified statistics, recomputed from the public info/*.mat files (MARS-evaluation). The stored
# gallery is the test table minus the query rows, junk included; `ids` never counts pid -1.
VERIFIED_STATS = {
    "train": {"ids": 625, "tracklets": 8298, "frames": 509914, "min_len": 5, "max_len": 900},
    "query": {"ids": 626, "tracklets": 1980, "frames": 114493, "min_len": 2, "max_len": 880},
    "gallery": {"ids": 621, "tracklets": 10200, "frames": 566596, "junk": 870},
}
UNVERIFIED_STATS: dict = {}

_NAME_RE = re.compile(r"^(\d{4}|00-1)C(\d)T(\d{4})F(\d{3,})\.jpg$")


def _read_names(path: str) -> list[str]:
    """Reads a MATLAB-written name list: `\\r\\n` or `\\n` line ends, trailing blank lines ignored."""
    with open(path, encoding="ascii", newline="") as f:
        lines = [line.rstrip("\r\n") for line in f.read().split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    for i, line in enumerate(lines):
        if not _NAME_RE.match(line):
            raise DataPrepError(f"{path}, line {i + 1}: {line!r} is not a MARS frame name")
    return lines


def _load_table(path: str, key: str) -> np.ndarray:
    """Loads a `[start, end, pid, camid]` table from a `.mat` file, checking its shape."""
    try:
        table = scipy.io.loadmat(path)[key]
    except KeyError:
        raise DataPrepError(f"{path}: no variable {key!r}") from None
    if table.ndim != 2 or table.shape[1] != 4:
        raise DataPrepError(f"{path}: {key!r} has shape {table.shape}, expected (N, 4)")
    return table.astype(np.int64)


def _load_query_rows(path: str, num_test: int) -> set[int]:
    """Returns the 0-based test rows named by `query_IDX` (stored 1-based)."""
    try:
        rows = scipy.io.loadmat(path)["query_IDX"].astype(np.int64).ravel() - 1
    except KeyError:
        raise DataPrepError(f"{path}: no variable 'query_IDX'") from None
    bad = rows[(rows < 0) | (rows >= num_test)]
    if bad.size:
        raise DataPrepError(f"{path}: query rows {bad[:5] + 1} outside 1..{num_test}")
    if len(set(rows.tolist())) != rows.size:
        raise DataPrepError(f"{path}: query_IDX repeats a row")
    return set(rows.tolist())


def _row_tracklet(root, subset, names, names_file, row, values, split, bad) -> Tracklet | None:
    """Builds the tracklet of one table row, or reports why it cannot (then returns None)."""
    start, end, pid, cam = (int(v) for v in values)
    where = f"{names_file}, rows {start}..{end} (table row {row + 1}, pid {pid}, camera {cam})"
    if not 1 <= start <= len(names) + 1 or end > len(names):
        raise DataPrepError(f"{where}: outside the name list (1..{len(names)})")
    rows = names[start - 1 : end]
    numbers = []
    for name in rows:
        m = _NAME_RE.match(name)
        name_pid = -1 if m.group(1) == "00-1" else int(m.group(1))
        if name_pid != pid or int(m.group(2)) != cam:
            bad.report(f"{where}: name {name!r} disagrees with the .mat row")
            return None
        numbers.append(int(m.group(4)))
    order = np.argsort(numbers, kind="stable")
    paths = [os.path.join(root, subset, rows[i][:4], rows[i]) for i in order]
    numbers = [numbers[i] for i in order]
    why = check_frames(where, numbers)
    if why:
        bad.report(why)
        return None
    return Tracklet(
        key=f"{NAME}/{subset.removeprefix('bbox_')}/{rows[0][:11]}",
        split=split,
        pid=pid,
        camid=cam - 1,
        frame_paths=tuple(paths),
        frame_numbers=tuple(numbers),
        is_junk=pid == -1,
        is_distractor=pid == 0,
        source=where,
    )


def parse(root: str, *, skip_bad: bool = False) -> DatasetIndex:
    """Parses a raw MARS folder (see `EXPECTED_TREE`) into the canonical index."""
    for sub in ("bbox_train", "bbox_test", "info"):
        require(os.path.join(root, sub), EXPECTED_TREE)
    info = lambda f: require(os.path.join(root, "info", f), EXPECTED_TREE)
    bad = BadInput(skip_bad)
    tracklets = []
    for subset, stem in (("bbox_train", "train"), ("bbox_test", "test")):
        names_file = info(f"{stem}_name.txt")
        names = _read_names(names_file)
        table = _load_table(info(f"tracks_{stem}_info.mat"), f"track_{stem}_info")
        query = _load_query_rows(info("query_IDX.mat"), len(table)) if stem == "test" else set()
        for row, values in enumerate(table):
            split = "train" if stem == "train" else ("query" if row in query else "gallery")
            t = _row_tracklet(root, subset, names, names_file, row, values, split, bad)
            if t is not None:
                tracklets.append(t)
    return DatasetIndex(NAME, tracklets, IMAGE_FORMAT, skipped=bad.skipped)
