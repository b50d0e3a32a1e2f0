"""iLIDS-VID (Wang et al., ECCV 2014): parser of the raw release into the canonical index.

Facts followed here (the release; torchreid's loader): `i-LIDS-VID/sequences/cam{1,2}/personNNN/`
folders of `cam1_personNNN_FFFFF.png` frames with absolute frame numbers (sorted as integers, never
by a bare directory listing), and `train-test people splits/train_test_splits_ilidsvid.mat` whose
`ls_set` indexes the sorted cam1 person folders (1-based). All 600 tracklets are stored in one
`tracklets` split; the reader applies split i (train: both cameras of the train persons; query: cam1
and gallery: cam2 of the test persons).
"""

from __future__ import annotations

import os
import re

from data_prep.index import BadInput, DataPrepError, DatasetIndex, Tracklet, check_frames, require
from data_prep.published_splits import load_ls_set_splits

NAME = "ilidsvid"
IMAGE_FORMAT = "png"
SPLIT_FILE = os.path.join("train-test people splits", "train_test_splits_ilidsvid.mat")
EXPECTED_TREE = """\
<manual_dir>/
  i-LIDS-VID/sequences/cam1/person001/cam1_person001_00317.png ...
  i-LIDS-VID/sequences/cam2/person001/cam2_person001_00317.png ...
  train-test people splits/train_test_splits_ilidsvid.mat"""
INSTRUCTIONS = f"""\
Download iLIDS-VID.tar from the authors and unpack it so that the manual folder reads:
{EXPECTED_TREE}"""

# Peer loaders' asserts and docstrings, not recomputed, so these only warn (split 0).
VERIFIED_STATS: dict = {}
UNVERIFIED_STATS = {
    "train": {"ids": 150, "tracklets": 300},
    "query": {"ids": 150, "tracklets": 150},
    "gallery": {"ids": 150, "tracklets": 150},
}

_PERSON_RE = re.compile(r"^person(\d+)$")


def _frames(folder: str, cam: int, person: str, bad: BadInput):
    """Returns (paths, numbers) of one camera's frames of a person, sorted by frame number."""
    name_re = re.compile(rf"^cam{cam}_{person}_(\d+)\.png$")
    found = []
    for name in os.listdir(folder):
        if name.startswith("."):
            continue
        m = name_re.match(name)
        if not m:
            bad.report(f"{folder}: {name!r} is not a frame name cam{cam}_{person}_NNNNN.png")
            return None
        found.append((int(m.group(1)), os.path.join(folder, name)))
    found.sort()
    return [p for _, p in found], [n for n, _ in found]


def parse(root: str, *, skip_bad: bool = False) -> DatasetIndex:
    """Parses a raw iLIDS-VID folder (see `EXPECTED_TREE`) into the canonical index."""
    seq = os.path.join(root, "i-LIDS-VID", "sequences")
    cam_dirs = [require(os.path.join(seq, f"cam{c}"), EXPECTED_TREE) for c in (1, 2)]
    split_file = require(os.path.join(root, SPLIT_FILE), EXPECTED_TREE)
    persons = sorted(p for p in os.listdir(cam_dirs[0]) if _PERSON_RE.match(p))
    missing = sorted(set(persons) ^ {p for p in os.listdir(cam_dirs[1]) if _PERSON_RE.match(p)})
    if missing:
        raise DataPrepError(f"{seq}: persons not in both cameras: {missing[:10]}")
    pids = [int(_PERSON_RE.match(p).group(1)) for p in persons]
    splits = load_ls_set_splits(split_file, pids)
    bad = BadInput(skip_bad)
    tracklets = []
    for person, pid in zip(persons, pids, strict=True):
        for cam, cam_dir in enumerate(cam_dirs, start=1):
            folder = os.path.join(cam_dir, person)
            frames = _frames(folder, cam, person, bad)
            if frames is None:
                continue
            why = check_frames(folder, frames[1])
            if why:
                bad.report(why)
                continue
            tracklets.append(
                Tracklet(
                    key=f"{NAME}/cam{cam}/{person}",
                    split="tracklets",
                    pid=pid,
                    camid=cam - 1,
                    frame_paths=tuple(frames[0]),
                    frame_numbers=tuple(frames[1]),
                    source=folder,
                )
            )
    return DatasetIndex(NAME, tracklets, IMAGE_FORMAT, splits=splits, skipped=bad.skipped)
