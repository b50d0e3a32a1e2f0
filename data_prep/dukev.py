"""DukeMTMC-VideoReID (Wu et al., CVPR 2018): parser of the raw release into the canonical index.

Facts followed here (the release's README): `{train,query,gallery}/<pid4>/<tracklet4>/` folders of
`0001_C6_F0099_X30823.jpg` frames (pid, camera 1-8, frame within the tracklet, `X` normal or `D`
distractor, frame within the camera video); the older naming `0001C6F0099X30823.jpg` is accepted.
Frame numbers have gaps and need not start at 1, so frames are sorted by the parsed `F` number,
never globbed as `F0001..F{n}` (which silently drops frames, as some peer loaders do).
"""

from __future__ import annotations

import os
import re

from data_prep.index import BadInput, DatasetIndex, Tracklet, check_frames, require

NAME = "dukev"
IMAGE_FORMAT = "jpeg"
EXPECTED_TREE = """\
<manual_dir>/
  train/0001/0003/0001_C6_F0099_X30823.jpg ...
  query/<pid4>/<tracklet4>/...
  gallery/<pid4>/<tracklet4>/..."""
INSTRUCTIONS = f"""\
Download DukeMTMC-VideoReID.zip (Yu-Wu/DukeMTMC-VideoReID) and unpack it so that the manual folder
reads:
{EXPECTED_TREE}
Frames are full-resolution crops: consider `--resize 256x128`."""

# Identity and tracklet counts are confirmed by the release's README; frame counts come
# from a single third-party source, so they only warn.
VERIFIED_STATS = {
    "train": {"ids": 702, "tracklets": 2196},
    "query": {"ids": 702, "tracklets": 702},
    "gallery": {"ids": 1110, "tracklets": 2636},
}
UNVERIFIED_STATS = {
    "train": {"frames": 369656},
    "query": {"frames": 111848},
    "gallery": {"frames": 445764},
}

_NAME_RE = re.compile(r"^(\d{4})_?C(\d+)_?F(\d+)_?([XD])(\d+)\.jpg$")


def _parse_tracklet(root, split, pid_dir, trk_dir, bad) -> Tracklet | None:
    folder = os.path.join(root, split, pid_dir, trk_dir)
    entries = sorted(n for n in os.listdir(folder) if not n.startswith("."))
    parsed = []
    for name in entries:
        m = _NAME_RE.match(name)
        if not m or m.group(1) != pid_dir:
            bad.report(f"{folder}: {name!r} is not a frame of pid {pid_dir}")
            return None
        parsed.append((int(m.group(3)), int(m.group(2)), m.group(4), name))
    parsed.sort()
    cams = {cam for _, cam, _, _ in parsed}
    if len(cams) > 1:
        bad.report(f"{folder}: frames from several cameras {sorted(cams)}")
        return None
    paths = [os.path.join(folder, p[3]) for p in parsed]
    numbers = [p[0] for p in parsed]
    why = check_frames(folder, numbers)
    if why:
        bad.report(why)
        return None
    return Tracklet(
        key=f"{NAME}/{split}/{pid_dir}/{trk_dir}",
        split=split,
        pid=int(pid_dir),
        camid=cams.pop() - 1,
        frame_paths=tuple(paths),
        frame_numbers=tuple(numbers),
        # A tracklet is a distractor when its frames carry the `D` mark.
        is_distractor=all(p[2] == "D" for p in parsed),
        source=folder,
    )


def _subdirs(path: str) -> list[str]:
    """Sorted sub-folders of `path`, ignoring hidden entries and stray files (a README, ...)."""
    return sorted(
        n
        for n in os.listdir(path)
        if not n.startswith(".") and os.path.isdir(os.path.join(path, n))
    )


def parse(root: str, *, skip_bad: bool = False) -> DatasetIndex:
    """Parses a raw DukeMTMC-VideoReID folder (see `EXPECTED_TREE`) into the canonical index."""
    bad = BadInput(skip_bad)
    tracklets = []
    for split in ("train", "query", "gallery"):
        split_dir = require(os.path.join(root, split), EXPECTED_TREE)
        for pid_dir in _subdirs(split_dir):
            for trk_dir in _subdirs(os.path.join(split_dir, pid_dir)):
                t = _parse_tracklet(root, split, pid_dir, trk_dir, bad)
                if t is not None:
                    tracklets.append(t)
    return DatasetIndex(NAME, tracklets, IMAGE_FORMAT, skipped=bad.skipped)
