"""PRID-2011 (Hirzer et al., SCIA 2011): parser of the raw release into the canonical index.

Facts followed here (the release; torchreid's and person-reid-lib's loaders):
`prid_2011/multi_shot/cam_{a,b}/person_NNNN/NNNN.png`, frames sorted by their number; only persons
0001-0200 appear in both cameras. The 178-person protocol keeps those with at least 27 frames in
both cameras and indexes them (sorted, 1-based) with `ls_set` of `train_test_splits_prid.mat`
(shipped in iLIDS-VID's `train-test people splits/`). Only the protocol's tracklets are stored (one
`tracklets` split); the reader applies split i.
"""

from __future__ import annotations

import os
import re

from data_prep.index import BadInput, DataPrepError, DatasetIndex, Tracklet, check_frames, require
from data_prep.published_splits import load_ls_set_splits

NAME = "prid2011"
IMAGE_FORMAT = "png"
SPLIT_FILE = os.path.join("train-test people splits", "train_test_splits_prid.mat")
# Persons 1..200 are the ones filmed by both cameras; the protocol needs >= 27 frames in each.
MAX_SHARED_PERSON = 200
MIN_FRAMES = 27
EXPECTED_TREE = """\
<manual_dir>/
  prid_2011/multi_shot/cam_a/person_0001/0001.png ...   (385 persons)
  prid_2011/multi_shot/cam_b/person_0001/0001.png ...   (749 persons)
  train-test people splits/train_test_splits_prid.mat   (from the iLIDS-VID archive)"""
INSTRUCTIONS = f"""\
Download prid_2011.zip from the authors, unpack it, and copy `train-test people splits/` from the
iLIDS-VID archive next to it, so that the manual folder reads:
{EXPECTED_TREE}"""

# 178 persons (both published split files and a peer loader's assert agree); per split 89/89.
VERIFIED_STATS = {
    "train": {"ids": 89, "tracklets": 178},
    "query": {"ids": 89, "tracklets": 89},
    "gallery": {"ids": 89, "tracklets": 89},
}
UNVERIFIED_STATS: dict = {}

_PERSON_RE = re.compile(r"^person_(\d{4})$")
_FRAME_RE = re.compile(r"^(\d{4})\.png$")


def _frames(folder: str, bad: BadInput):
    """Returns (paths, numbers) of a person folder's frames, sorted by frame number."""
    found = []
    for name in os.listdir(folder):
        if name.startswith("."):
            continue
        m = _FRAME_RE.match(name)
        if not m:
            bad.report(f"{folder}: {name!r} is not a frame name NNNN.png")
            return None
        found.append((int(m.group(1)), os.path.join(folder, name)))
    found.sort()
    return [p for _, p in found], [n for n, _ in found]


def _shared_persons(cam_dirs: list[str]) -> list[str]:
    """Person folders numbered 1..200 (present in both cameras), sorted."""
    sets = []
    for cam_dir in cam_dirs:
        names = (_PERSON_RE.match(p) for p in os.listdir(cam_dir))
        sets.append({m.group(0) for m in names if m and int(m.group(1)) <= MAX_SHARED_PERSON})
    if sets[0] != sets[1]:
        raise DataPrepError(
            f"persons 1..{MAX_SHARED_PERSON} must be in both cameras; only in one: "
            f"{sorted(sets[0] ^ sets[1])[:10]}"
        )
    return sorted(sets[0])


def parse(root: str, *, skip_bad: bool = False) -> DatasetIndex:
    """Parses a raw PRID-2011 folder (see `EXPECTED_TREE`) into the canonical index."""
    shots = os.path.join(root, "prid_2011", "multi_shot")
    cam_dirs = [require(os.path.join(shots, f"cam_{c}"), EXPECTED_TREE) for c in "ab"]
    split_file = require(os.path.join(root, SPLIT_FILE), EXPECTED_TREE)
    bad = BadInput(skip_bad)
    kept = []
    for person in _shared_persons(cam_dirs):
        frames = [_frames(os.path.join(d, person), bad) for d in cam_dirs]
        if all(f is not None and len(f[0]) >= MIN_FRAMES for f in frames):
            kept.append((person, frames))
    pids = [int(person[-4:]) for person, _ in kept]
    splits = load_ls_set_splits(split_file, pids)
    tracklets = []
    for (person, frames), pid in zip(kept, pids, strict=True):
        for camid, (cam_dir, (paths, numbers)) in enumerate(zip(cam_dirs, frames, strict=True)):
            why = check_frames(os.path.join(cam_dir, person), numbers)
            if why:
                bad.report(why)
                continue
            tracklets.append(
                Tracklet(
                    key=f"{NAME}/cam_{'ab'[camid]}/{person}",
                    split="tracklets",
                    pid=pid,
                    camid=camid,
                    frame_paths=tuple(paths),
                    frame_numbers=tuple(numbers),
                    source=os.path.join(cam_dir, person),
                )
            )
    return DatasetIndex(NAME, tracklets, IMAGE_FORMAT, splits=splits, skipped=bad.skipped)
