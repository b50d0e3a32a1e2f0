"""The canonical tracklet index every dataset parser produces, and the checks shared by parsers.

A parser turns a raw dataset folder into a `DatasetIndex`: one `Tracklet` per stored record, with
frames already sorted by their parsed frame number. Everything after the parser (the TFDS builder,
the reader, the statistics) works on this index only, so dataset quirks stay inside the parsers.
"""

from __future__ import annotations

import dataclasses
import io
import os

from PIL import Image

# Byte signatures of the two encodings the datasets use. A file that starts with neither is not an
# image; one that lacks the trailer was cut short (an interrupted copy or extraction).
_JPEG_HEAD, _JPEG_TAIL = b"\xff\xd8", b"\xff\xd9"
_PNG_HEAD, _PNG_TAIL = b"\x89PNG\r\n\x1a\n", b"IEND\xaeB`\x82"


class DataPrepError(ValueError):
    """Raised for any input the converters refuse: a missing file, a bad row, a corrupt image."""


@dataclasses.dataclass(frozen=True)
class Tracklet:
    """One stored tracklet.

    Attributes:
      key: unique, deterministic record key such as `mars/train/0001C1T0001`; readers sort by it.
      split: stored split: 'train', 'query', 'gallery' (or 'tracklets' for iLIDS-VID/PRID-2011).
      pid: raw person id as in the dataset (MARS: -1 junk, 0 distractor).
      camid: 0-based camera index.
      frame_paths: absolute frame paths, sorted by `frame_numbers`.
      frame_numbers: parsed frame numbers, strictly increasing.
      is_junk: MARS pid -1 (bad detections; never a match, never a negative).
      is_distractor: MARS pid 0, DukeMTMC-VideoReID `D` frames: negatives that match nobody.
      label: training label (rank of `pid` among the sorted train pids), -1 outside train.
      source: where the tracklet comes from (file and row, or folder), for error messages.
    """

    key: str
    split: str
    pid: int
    camid: int
    frame_paths: tuple[str, ...]
    frame_numbers: tuple[int, ...]
    is_junk: bool = False
    is_distractor: bool = False
    label: int = -1
    source: str = ""


@dataclasses.dataclass(repr=False)
class DatasetIndex:
    """Everything a builder needs to write one dataset.

    Attributes:
      name: builder name ('mars', 'dukev', 'ilidsvid', 'prid2011', 'lsvid').
      tracklets: all stored tracklets, in any order (builders sort by key).
      image_format: 'jpeg' or 'png', the encoding of the original frames.
      splits: iLIDS-VID/PRID-2011 only: the published splits, each `{'train': [pids], 'test': [pids]}`.
      skipped: one line per tracklet dropped under `skip_bad` (what and why).
    """

    name: str
    tracklets: list[Tracklet]
    image_format: str
    splits: list[dict[str, list[int]]] = dataclasses.field(default_factory=list)
    skipped: list[str] = dataclasses.field(default_factory=list)

    def __repr__(self) -> str:  # Sizes, not contents: a million frame paths would be the repr.
        frames = sum(len(t.frame_paths) for t in self.tracklets)
        return f"DatasetIndex({self.name}: {len(self.tracklets)} tracklets, {frames} frames)"


class BadInput:
    """Collects bad tracklets: raises at once by default, or records a skip under `skip_bad`."""

    def __init__(self, skip_bad: bool):
        self.skip_bad = skip_bad
        self.skipped: list[str] = []

    def report(self, message: str) -> None:
        """Raises `DataPrepError(message)`, or records it when skipping bad input."""
        if not self.skip_bad:
            raise DataPrepError(message + " (rerun with --skip_bad to skip such tracklets)")
        self.skipped.append(message)


def require(path: str, expected_tree: str) -> str:
    """Returns `path` if it exists, else raises an error naming it and showing the expected tree."""
    if not os.path.exists(path):
        raise DataPrepError(f"Missing {path!r}. Expected layout:\n{expected_tree}")
    return path


def check_image(path: str, image_format: str) -> str | None:
    """Returns why the frame at `path` is unusable (missing, not an image, truncated, does not
    decode), or None.

    The frame is decoded in full, as training will decode it: a damaged header or table fails here,
    naming the file, instead of in the input pipeline hours later. (A JPEG missing some scan data
    but keeping its end marker still decodes, with grey blocks, in every decoder; that passes.)
    """
    head, tail = (_JPEG_HEAD, _JPEG_TAIL) if image_format == "jpeg" else (_PNG_HEAD, _PNG_TAIL)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        return f"unreadable ({e.strerror})"
    if not data.startswith(head):
        return f"not a {image_format.upper()} file"
    # JPEG writers may pad after the EOI marker, so look for it near the end rather than at it.
    if tail not in data[-64:]:
        return f"truncated (no {image_format.upper()} end marker)"
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
    except (OSError, SyntaxError, ValueError) as e:  # PIL's errors for undecodable data.
        return f"undecodable ({e})"
    return None


def check_frames(where: str, numbers) -> str | None:
    """Returns why a tracklet's frame list is unusable (empty, repeated numbers), or None.

    Args:
      where: how to name the tracklet in the message (file and row).
      numbers: the parsed frame numbers, already sorted.
    """
    if not numbers:
        return f"{where}: empty tracklet (no frames)"
    if any(b <= a for a, b in zip(numbers, numbers[1:], strict=False)):
        return f"{where}: frame numbers repeat: {list(numbers)[:10]}..."
    return None


def first_bad_image(paths, image_format: str) -> str | None:
    """Returns 'frame <path> is <why>' for the first unusable frame of `paths`, or None."""
    for path in paths:
        why = check_image(path, image_format)
        if why:
            return f"frame {path!r} is {why}"
    return None


def with_train_labels(tracklets: list[Tracklet]) -> list[Tracklet]:
    """Sets `label` = rank of the pid among the sorted unique train pids (never set iteration order)."""
    train_pids = sorted({t.pid for t in tracklets if t.split == "train"})
    rank = {pid: i for i, pid in enumerate(train_pids)}
    return [
        dataclasses.replace(t, label=rank[t.pid] if t.split == "train" else -1) for t in tracklets
    ]


def unique_keys(tracklets: list[Tracklet]) -> list[Tracklet]:
    """Makes keys unique by suffixing repeats with their position (`~2`, `~3`, ...), deterministically.

    Raw names can repeat a tracklet id (two detections that got the same number); both are kept.
    """
    seen: dict[str, int] = {}
    out = []
    for t in tracklets:
        seen[t.key] = seen.get(t.key, 0) + 1
        out.append(t if seen[t.key] == 1 else dataclasses.replace(t, key=f"{t.key}~{seen[t.key]}"))
    return out
