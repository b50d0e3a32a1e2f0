"""The in-RAM tracklet index: encoded frames per tracklet plus identity, label and camera arrays.

PK sampling needs random access to tracklets, which TFRecord lacks, so a split is read once without
decoding and held here; only the sampled frames are ever decoded. A training index keeps only this
process's identity slice (`label % process_count == process_index`), so its memory is proportional to
the encoded bytes of that slice (MARS train is about 3 GB encoded in total).
"""

from __future__ import annotations

import dataclasses
import io
import sys
from collections.abc import Iterable, Mapping

import numpy as np
from absl import logging
from PIL import Image

from vreid_jax.errors import UserError


@dataclasses.dataclass
class TrackletIndex:
    """Tracklets of one split (or one process's slice of it).

    Attributes:
      frames: encoded frames (JPEG/PNG bytes) per tracklet, in temporal order.
      pids: raw person id per tracklet, int64 [N] (-1 junk, 0 distractor where the dataset has them).
      labels: training label (0..num_classes-1) per tracklet, int64 [N]; -1 outside the train split.
      camids: 0-based camera per tracklet, int32 [N].
      lengths: frames per tracklet, int32 [N].
      keys: tracklet keys (e.g. 'mars/train/0001C1T0001'), str [N].
      label_counts: training split only: tracklets per label over the whole split (all processes),
        int64 [num_classes]; None elsewhere.
    """

    frames: list[list[bytes]]
    pids: np.ndarray
    labels: np.ndarray
    camids: np.ndarray
    lengths: np.ndarray
    keys: np.ndarray
    label_counts: np.ndarray | None = None

    def __post_init__(self):
        self.pids = np.asarray(self.pids, np.int64).reshape(-1)
        self.labels = np.asarray(self.labels, np.int64).reshape(-1)
        self.camids = np.asarray(self.camids, np.int32).reshape(-1)
        self.lengths = np.asarray(self.lengths, np.int32).reshape(-1)
        self.keys = np.asarray(self.keys, dtype=str).reshape(-1)
        n = len(self.frames)
        for name in ("pids", "labels", "camids", "lengths", "keys"):
            if len(getattr(self, name)) != n:
                raise ValueError(
                    f"TrackletIndex.{name} has {len(getattr(self, name))} rows, frames {n}."
                )
        for i, frames in enumerate(self.frames):
            if len(frames) != self.lengths[i] or not frames:
                raise ValueError(
                    f"Tracklet {self.keys[i]!r}: {len(frames)} encoded frames, length {self.lengths[i]}."
                )

    def __len__(self) -> int:
        return len(self.frames)

    def training_label_counts(self) -> np.ndarray:
        """`label_counts`, or a ValueError when this is not a training split with labels."""
        if self.label_counts is None or len(self.label_counts) == 0:
            raise UserError(
                "The training split is empty or has no training labels: check config.data.name and "
                "config.data.data_dir."
            )
        return self.label_counts

    @property
    def num_ids(self) -> int:
        return len(np.unique(self.pids))

    @property
    def num_cameras(self) -> int:
        return len(np.unique(self.camids))

    @property
    def num_frames(self) -> int:
        return int(self.lengths.sum())

    @property
    def nbytes(self) -> int:
        """Encoded frame bytes held."""
        return sum(len(f) for frames in self.frames for f in frames)

    def memory_bytes(self) -> int:
        """Host memory held, Python object overhead included (an estimate, for logging)."""
        objects = sum(sys.getsizeof(f) for frames in self.frames for f in frames)
        lists = sum(sys.getsizeof(frames) for frames in self.frames)
        arrays = sum(
            a.nbytes for a in (self.pids, self.labels, self.camids, self.lengths, self.keys)
        )
        return objects + lists + arrays

    def select(self, rows) -> TrackletIndex:
        """The tracklets at `rows` (in that order); shares the frame bytes, keeps `label_counts`."""
        rows = np.asarray(rows, np.int64).reshape(-1)
        return TrackletIndex(
            frames=[self.frames[r] for r in rows],
            pids=self.pids[rows],
            labels=self.labels[rows],
            camids=self.camids[rows],
            lengths=self.lengths[rows],
            keys=self.keys[rows],
            label_counts=self.label_counts,
        )

    @staticmethod
    def concatenate(first: TrackletIndex, second: TrackletIndex) -> TrackletIndex:
        """`first`'s tracklets followed by `second`'s (e.g. MARS query + gallery)."""
        return TrackletIndex(
            frames=first.frames + second.frames,
            pids=np.concatenate([first.pids, second.pids]),
            labels=np.concatenate([first.labels, second.labels]),
            camids=np.concatenate([first.camids, second.camids]),
            lengths=np.concatenate([first.lengths, second.lengths]),
            keys=np.concatenate([first.keys, second.keys]),
        )

    def frame_size(self, max_tracklets: int = 16) -> tuple[int, int]:
        """(height, width) of the stored frames: the smallest over the first frames of a few tracklets.

        Reads image headers only (PIL decodes no pixels for `.size`).
        """
        if not self.frames:
            raise ValueError("frame_size() of an empty TrackletIndex.")
        sizes = []
        for i in np.linspace(0, len(self) - 1, min(max_tracklets, len(self))).astype(int):
            width, height = Image.open(io.BytesIO(self.frames[i][0])).size
            sizes.append((height, width))
        return min(h for h, _ in sizes), min(w for _, w in sizes)

    def summary_row(self, subset: str) -> list:
        """[subset, ids, tracklets, cameras, frames, encoded MB] for the dataset summary table."""
        return [
            subset,
            self.num_ids,
            len(self),
            self.num_cameras,
            self.num_frames,
            self.nbytes / 2**20,
        ]


SUMMARY_HEADER = ["subset", "# ids", "# tracklets", "# cameras", "# frames", "encoded MB"]


def from_split(
    examples: Iterable[Mapping],
    *,
    source: str = "split",
    process_index: int = 0,
    process_count: int = 1,
) -> TrackletIndex:
    """Builds an index from decoded-free examples, keeping one process's identity slice if asked.

    Args:
      examples: dicts with numpy values as `data_prep.reader.read_split(...).as_numpy_iterator()`
        yields them: `frames` (bytes [T]), `num_frames`, `pid`, `label`, `camid`, `tracklet_key`.
      source: names the split in errors and logs (e.g. 'mars/train').
      process_index: this process.
      process_count: with more than one, keep only tracklets whose `label % process_count ==
        process_index` (every label must then be >= 0, i.e. a training split).

    Returns:
      The index; for a split whose labels are all >= 0, with `label_counts` over the whole split.

    Raises:
      ValueError: for an example whose frame count disagrees with `num_frames`, a negative label in a
        sliced split, or training labels that are not 0..num_classes-1.
    """
    keep: dict[str, list] = {
        k: [] for k in ("frames", "pids", "labels", "camids", "lengths", "keys")
    }
    all_labels = []
    for example in examples:
        key = _text(example["tracklet_key"])
        label = int(example["label"])
        frames = [bytes(f) for f in example["frames"]]
        if len(frames) != int(example["num_frames"]) or not frames:
            raise ValueError(
                f"{source}: tracklet {key!r} has {len(frames)} frames but num_frames="
                f"{int(example['num_frames'])}."
            )
        all_labels.append(label)
        if process_count > 1:
            if label < 0:
                raise ValueError(
                    f"{source}: tracklet {key!r} has label {label}; only a training split (labels >= 0) "
                    "can be sliced by identity across processes."
                )
            if label % process_count != process_index:
                continue
        keep["frames"].append(frames)
        keep["pids"].append(int(example["pid"]))
        keep["labels"].append(label)
        keep["camids"].append(int(example["camid"]))
        keep["lengths"].append(len(frames))
        keep["keys"].append(key)
    index = TrackletIndex(
        **keep, label_counts=_count_labels(np.asarray(all_labels, np.int64), source)
    )
    logging.info(
        "%s%s: %d of %d tracklets, %d frames, %.1f MB encoded, %.1f MB in memory.",
        source,
        f" (process {process_index} of {process_count})" if process_count > 1 else "",
        len(index),
        len(all_labels),
        index.num_frames,
        index.nbytes / 2**20,
        index.memory_bytes() / 2**20,
    )
    return index


def _count_labels(labels: np.ndarray, source: str) -> np.ndarray | None:
    """Tracklets per label, or None unless every label is >= 0 (a training split)."""
    if len(labels) == 0 or (labels < 0).any():
        return None
    counts = np.bincount(labels)
    if (counts == 0).any():
        raise ValueError(
            f"{source}: training labels are not contiguous; label {int(np.argmin(counts))} has no "
            f"tracklet (labels must be 0..{len(counts) - 1}, the rank of each pid)."
        )
    return counts


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes | np.bytes_) else str(value)
