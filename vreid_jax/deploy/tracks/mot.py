"""MOTChallenge-style track files: one box per line, `frame,id,x,y,w,h[,conf,...]`.

Conventions (MOTChallenge's): frame numbers start at 1; `x, y` is the box's top-left corner in
1-based pixel coordinates (pixel (1, 1) is the image's top-left pixel), `w, h` its size in pixels.
Extra columns (confidence, class, visibility, 3-D position) are kept as they are when a file is
rewritten (`vreid-relink` changes the id column only).
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from vreid_jax import errors, files


class MotFileError(errors.UserError):
    """A track file that cannot be parsed; the message names the file and line."""


@dataclasses.dataclass
class MotTracks:
    """The rows of one track file.

    Attributes:
      path: the file.
      frames: 1-based frame number per row, int64 [R].
      ids: track id per row, int64 [R].
      boxes: (x, y, w, h) per row in MOT's 1-based pixel coordinates, float64 [R, 4].
      lines: 1-based line number of each row in the file (for messages).
      rest: the columns after the box, verbatim (for rewriting), str [R].
    """

    path: str
    frames: np.ndarray
    ids: np.ndarray
    boxes: np.ndarray
    lines: np.ndarray
    rest: list[str]

    def __len__(self) -> int:
        return len(self.frames)

    def track_rows(self) -> dict[int, np.ndarray]:
        """Row indices of each track id, ordered by frame."""
        order = np.lexsort((self.frames, self.ids))
        ids = self.ids[order]
        starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
        return {
            int(ids[s]): order[s:e]
            for s, e in zip(starts, np.r_[starts[1:], len(ids)], strict=True)
        }

    def where(self, row: int) -> str:
        return f"{self.path}:{self.lines[row]}"


def read(path: str) -> MotTracks:
    """Parses a track file; MotFileError naming the line for a malformed row, a duplicate
    (frame, id), a frame below 1 or a non-positive box size."""
    if not os.path.isfile(path):
        raise MotFileError(f"{path}: no such track file.")
    frames, ids, boxes, lines, rest = [], [], [], [], []
    seen = {}
    with open(path) as f:
        for number, text in enumerate(f, start=1):
            text = text.strip()
            if not text or text.startswith("#"):
                continue
            cells = [c.strip() for c in text.split(",")]
            where = f"{path}:{number}"
            if len(cells) < 6:
                raise MotFileError(
                    f"{where}: {len(cells)} columns in {text!r}; expected at least 6: "
                    "frame,id,x,y,w,h[,...]."
                )
            try:
                frame, track = int(float(cells[0])), int(float(cells[1]))
                box = [float(c) for c in cells[2:6]]
            except ValueError:
                raise MotFileError(f"{where}: non-numeric frame, id or box in {text!r}.") from None
            if frame < 1:
                raise MotFileError(f"{where}: frame {frame}; MOT frame numbers start at 1.")
            if not (box[2] > 0 and box[3] > 0 and np.all(np.isfinite(box))):
                raise MotFileError(f"{where}: box width and height must be positive; got {box}.")
            if (frame, track) in seen:
                raise MotFileError(
                    f"{where}: track {track} has a second box in frame {frame} (first at line "
                    f"{seen[frame, track]})."
                )
            seen[frame, track] = number
            frames.append(frame)
            ids.append(track)
            boxes.append(box)
            lines.append(number)
            rest.append(",".join(cells[6:]))
    if not frames:
        raise MotFileError(f"{path} has no rows: expected lines of frame,id,x,y,w,h[,...].")
    return MotTracks(
        path=path,
        frames=np.asarray(frames, np.int64),
        ids=np.asarray(ids, np.int64),
        boxes=np.asarray(boxes, np.float64).reshape(-1, 4),
        lines=np.asarray(lines, np.int64),
        rest=rest,
    )


def write(path: str, tracks: MotTracks, ids: np.ndarray | None = None) -> None:
    """Writes `tracks` (with `ids` instead of its own, when given) atomically, sorted by frame then
    id, extra columns verbatim."""
    ids = tracks.ids if ids is None else np.asarray(ids, np.int64)
    order = np.lexsort((ids, tracks.frames))
    with files.atomic_write(path) as f:
        for row in order:
            cells = [str(tracks.frames[row]), str(ids[row])]
            cells += [_number(v) for v in tracks.boxes[row]]
            line = ",".join(cells)
            if tracks.rest[row]:
                line += "," + tracks.rest[row]
            f.write(line + "\n")


def _number(value: float) -> str:
    """Integers without a decimal point, as MOT files usually write them."""
    return str(int(value)) if float(value).is_integer() else f"{value:.2f}"
