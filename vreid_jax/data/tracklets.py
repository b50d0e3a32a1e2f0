"""The tracklet index: identity, label, camera and length arrays, plus each tracklet's encoded frames.

Two kinds of frame storage, one interface (`index.frames[row]` is the tracklet's list of encoded
frames):
- In memory (a list of lists of bytes): the training split, because PK sampling needs random access
  to tracklets, which TFRecord lacks. It is read once without decoding, keeping only this process's
  identity slice (`label % process_count == process_index`), so its memory is the encoded bytes of
  that slice (MARS train: about 2.5 GB in all). Your own tracklets (`vreid_jax.deploy.tracks`) too.
- Streamed from the shards (`StreamedFrames`): query and gallery. Evaluation reads tracklets front to
  back, so one sequential pass holds one tracklet at a time, whatever the size of the test set; the
  per-tracklet arrays come from the build's metadata without reading a shard.

Reprs of these classes give sizes, never contents: a test set's frames are gigabytes.
"""

from __future__ import annotations

import dataclasses
import io
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping

import numpy as np
from absl import logging
from PIL import Image

from vreid_jax.errors import UserError


class StreamedFrames:
    """The encoded frames of a split's tracklets, read from its shards in order, one at a time.

    `frames[row]` advances one sequential reader to `row` and returns that tracklet's frames; only
    the current tracklet is held. Rows asked for in increasing order (as evaluation does) cost one
    pass over the split; a row before the current one starts a new pass. Each record read is checked
    against the index's key and length, so shards that disagree with their metadata fail loudly.
    """

    def __init__(self, open_split: Callable[[], Iterator[Mapping]], keys, lengths, source: str):
        """`open_split()` yields the split's examples in index order, as
        `data_prep.reader.read_split(...).as_numpy_iterator()` does."""
        self._open, self._keys, self._lengths, self.source = open_split, keys, lengths, source
        self._reader, self._row, self._frames = None, -1, None

    def __len__(self) -> int:
        return len(self._keys)

    def __repr__(self) -> str:
        return f"StreamedFrames({self.source}: {len(self)} tracklets, read in order)"

    def __getitem__(self, row) -> list[bytes]:
        row = int(row)
        if not 0 <= row < len(self):
            raise IndexError(f"{self.source}: row {row} outside 0..{len(self) - 1}.")
        if row < self._row or self._reader is None:
            self._reader, self._row = iter(self._open()), -1
        while self._row < row:
            example = next(self._reader, None)
            self._row += 1
            if example is None:
                raise ValueError(
                    f"{self.source}: the shards end after {self._row} tracklets; the dataset's "
                    f"metadata lists {len(self)}. Rebuild the dataset with data_prep.build."
                )
            if self._row == row:
                self._frames = self._checked(example, row)
        return self._frames

    def _checked(self, example, row: int) -> list[bytes]:
        key, frames = _text(example["tracklet_key"]), [bytes(f) for f in example["frames"]]
        expected_key, expected_length = str(self._keys[row]), int(self._lengths[row])
        if key != expected_key or len(frames) != expected_length:
            raise ValueError(
                f"{self.source}: record {row} is {key!r} with {len(frames)} frames; the dataset's "
                f"metadata says {expected_key!r} with {expected_length}. The shards and their "
                "metadata disagree: rebuild the dataset with data_prep.build."
            )
        return frames


class ChainedFrames:
    """The frames of two indices, one after the other (e.g. MARS's official gallery: the queries,
    then the stored gallery), without copying either."""

    def __init__(self, first, second):
        self.first, self.second = first, second

    def __len__(self) -> int:
        return len(self.first) + len(self.second)

    def __repr__(self) -> str:
        return f"ChainedFrames({self.first!r}, {self.second!r})"

    def __getitem__(self, row) -> list[bytes]:
        row = int(row)
        n = len(self.first)
        return self.first[row] if row < n else self.second[row - n]


@dataclasses.dataclass(repr=False)
class TrackletIndex:
    """Tracklets of one split (or one process's slice of it).

    Attributes:
      frames: encoded frames (JPEG/PNG bytes) per tracklet, in temporal order: a list (of lists of
        bytes, or of `tracks.sources.FrameFiles`), or a `StreamedFrames` / `ChainedFrames` read in
        row order.
      pids: raw person id per tracklet, int64 [N] (-1 junk, 0 distractor where the dataset has them).
      labels: training label (0..num_classes-1) per tracklet, int64 [N]; -1 outside the train split.
      camids: 0-based camera per tracklet, int32 [N].
      lengths: frames per tracklet, int32 [N].
      keys: tracklet keys (e.g. 'mars/train/0001C1T0001'), str [N].
      label_counts: training split only: tracklets per label over the whole split (all processes),
        int64 [num_classes]; None elsewhere.
    """

    frames: list[list[bytes]] | StreamedFrames | ChainedFrames
    pids: np.ndarray
    labels: np.ndarray
    camids: np.ndarray
    lengths: np.ndarray
    keys: np.ndarray
    label_counts: np.ndarray | None = None
    # frame_size()'s answer: a streamed index would otherwise open a second pass over its shards at
    # every evaluation (one to read the sizes, one to read the frames from row 0).
    _frame_size: dict = dataclasses.field(default_factory=dict, init=False, compare=False)

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
        if (self.lengths <= 0).any():
            row = int(np.argmin(self.lengths))
            raise ValueError(f"Tracklet {self.keys[row]!r} has {self.lengths[row]} frames.")
        if self.random_access:  # Streamed frames are checked as they are read.
            for i, frames in enumerate(self.frames):
                if len(frames) != self.lengths[i]:
                    raise ValueError(
                        f"Tracklet {self.keys[i]!r}: {len(frames)} encoded frames, length "
                        f"{self.lengths[i]}."
                    )

    def __len__(self) -> int:
        return len(self.frames)

    def __repr__(self) -> str:
        where = "random access" if self.random_access else "streamed"
        return f"TrackletIndex({len(self)} tracklets, {self.num_frames} frames {where})"

    @property
    def random_access(self) -> bool:
        """Whether any tracklet's frames can be had at any time (a list: bytes held in memory, or
        files read when used), rather than streamed from the shards in order."""
        return isinstance(self.frames, list)

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
        """Encoded frame bytes held (none for a streamed index)."""
        if not self.random_access:
            return 0
        return sum(len(f) for frames in self.frames for f in frames)

    def memory_bytes(self) -> int:
        """Host memory held, Python object overhead included (an estimate, for logging)."""
        frames = self.frames if self.random_access else []
        objects = sum(sys.getsizeof(f) for tracklet in frames for f in tracklet)
        lists = sum(sys.getsizeof(tracklet) for tracklet in frames)
        arrays = sum(
            a.nbytes for a in (self.pids, self.labels, self.camids, self.lengths, self.keys)
        )
        return objects + lists + arrays

    def select(self, rows) -> TrackletIndex:
        """The tracklets at `rows` (in that order); shares the frame bytes, keeps `label_counts`.
        In-memory indices only: a streamed one would be read whole."""
        if not self.random_access:
            raise TypeError(f"select() of a streamed index ({self.frames!r}).")
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
        """`first`'s tracklets followed by `second`'s (e.g. MARS query + gallery); frames are shared,
        not copied."""
        both_lists = first.random_access and second.random_access
        return TrackletIndex(
            frames=first.frames + second.frames
            if both_lists
            else ChainedFrames(first.frames, second.frames),
            pids=np.concatenate([first.pids, second.pids]),
            labels=np.concatenate([first.labels, second.labels]),
            camids=np.concatenate([first.camids, second.camids]),
            lengths=np.concatenate([first.lengths, second.lengths]),
            keys=np.concatenate([first.keys, second.keys]),
        )

    def frame_size(self, max_tracklets: int = 16) -> tuple[int, int]:
        """(height, width) of the stored frames: the smallest over the first frames of a few tracklets
        (spread over the index; for a streamed one, its first tracklets, so as not to read it all).

        Reads image headers only (PIL decodes no pixels for `.size`).
        """
        if not len(self):
            raise ValueError("frame_size() of an empty TrackletIndex.")
        if max_tracklets not in self._frame_size:
            self._frame_size[max_tracklets] = self._smallest_frame_size(max_tracklets)
        return self._frame_size[max_tracklets]

    def _smallest_frame_size(self, max_tracklets: int) -> tuple[int, int]:
        count = min(max_tracklets, len(self))
        rows = (
            np.linspace(0, len(self) - 1, count).astype(int) if self.random_access else range(count)
        )
        sizes = []
        for i in rows:
            width, height = Image.open(io.BytesIO(self.frames[i][0])).size
            sizes.append((height, width))
        return min(h for h, _ in sizes), min(w for _, w in sizes)

    def summary_row(self, subset: str) -> list:
        """[subset, ids, tracklets, cameras, frames, encoded MB held] for the dataset summary table
        ('streamed' where the frames are read as needed)."""
        return [
            subset,
            self.num_ids,
            len(self),
            self.num_cameras,
            self.num_frames,
            self.nbytes / 2**20 if self.random_access else "streamed",
        ]


SUMMARY_HEADER = ["subset", "# ids", "# tracklets", "# cameras", "# frames", "encoded MB held"]


def from_split(
    examples: Iterable[Mapping],
    *,
    source: str = "split",
    process_index: int = 0,
    process_count: int = 1,
    label_counts: np.ndarray | None = None,
    total: int | None = None,
    progress: bool = False,
) -> TrackletIndex:
    """Builds an in-memory index from decoded-free examples, keeping one process's identity slice.

    Args:
      examples: dicts with numpy values as `data_prep.reader.read_split(...).as_numpy_iterator()`
        yields them: `frames` (bytes [T]), `num_frames`, `pid`, `label`, `camid`, `tracklet_key`.
      source: names the split in errors and logs (e.g. 'mars/train').
      process_index: this process.
      process_count: with more than one, keep only tracklets whose `label % process_count ==
        process_index` (every label must then be >= 0, i.e. a training split). `examples` may already
        be restricted to that slice (then pass `label_counts`).
      label_counts: tracklets per label over the whole split (all processes), e.g. from the build's
        metadata; by default counted from `examples`.
      total: how many examples to expect, for the progress bar.
      progress: show a progress bar (stderr) while reading.

    Returns:
      The index; for a split whose labels are all >= 0, with `label_counts` over the whole split.

    Raises:
      ValueError: for an example whose frame count disagrees with `num_frames`, a negative label in a
        sliced split, or training labels that are not 0..num_classes-1.
    """
    import tqdm  # noqa: PLC0415

    keep: dict[str, list] = {
        k: [] for k in ("frames", "pids", "labels", "camids", "lengths", "keys")
    }
    all_labels = []
    start = time.perf_counter()
    bar = tqdm.tqdm(
        examples, total=total, desc=f"reading {source}", unit=" tracklets", disable=not progress,
        mininterval=2.0,
    )  # fmt: skip
    for example in bar:
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
    bar.close()
    if label_counts is None:
        label_counts = count_labels(np.asarray(all_labels, np.int64), source)
    index = TrackletIndex(**keep, label_counts=label_counts)
    logging.info(
        "%s%s: %d tracklets, %d frames, %.1f MB encoded, %.1f MB in memory, read in %.1f s.",
        source,
        f" (process {process_index} of {process_count})" if process_count > 1 else "",
        len(index),
        index.num_frames,
        index.nbytes / 2**20,
        index.memory_bytes() / 2**20,
        time.perf_counter() - start,
    )
    return index


def streamed(
    columns: Mapping[str, np.ndarray], open_split: Callable[[], Iterator[Mapping]], source: str
) -> TrackletIndex:
    """An index whose arrays come from `columns` (the build's metadata: `key`, `pid`, `label`,
    `camid`, `num_frames`, in record order) and whose frames are read from `open_split()` as needed
    (`StreamedFrames`); nothing is read from the shards here."""
    keys = np.asarray(columns["key"], dtype=str)
    lengths = np.asarray(columns["num_frames"], np.int32)
    return TrackletIndex(
        frames=StreamedFrames(open_split, keys, lengths, source),
        pids=columns["pid"],
        labels=columns["label"],
        camids=columns["camid"],
        lengths=lengths,
        keys=keys,
    )


def count_labels(labels: np.ndarray, source: str) -> np.ndarray | None:
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
